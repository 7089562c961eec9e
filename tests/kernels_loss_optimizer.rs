//! The fused loss and optimizer kernels (`webtune::kernels`: chunked cross-entropy and
//! log-sum-exp, the gradient gather, AdamW) against the composed tensor ops they replace.
//! Outputs and gradients within 1e-4 relative to their size (`assert_gradient_close`: elementwise
//! `|d| ≤ 1e-4·max(1, |ref|)` and relative norm 1e-3; NaN fails). Run on the default device (the
//! Flex CPU backend here) and with `WEBTUNE_DEVICE=gpu` (the CubeCL kernels through wgpu, Mesa
//! lavapipe here).

mod common;

use burn::tensor::{Tensor, TensorData};
use common::kernel_checks::*;
use common::*;
use webtune::kernels;
use webtune::rng::Rng;

#[test]
fn adamw_matches_the_torch_update_in_composed_ops() {
    let _serial = one_at_a_time();
    let device = gpu();
    let n = 70_001;
    let (lr, beta1, beta2, eps, weight_decay, t) = (1e-2f64, 0.9f64, 0.999f64, 1e-8f64, 0.01f64, 3);
    for clip in [0.0f32, 1.0, 100.0] {
        // Fresh tensors each time: on the GPU the update rewrites them.
        let param = values([n], 7, 1.0, &device);
        let grad = values([n], 8, 0.05, &device);
        let m = values([n], 9, 0.01, &device);
        let v = values([n], 10, 1e-4, &device).abs();
        let norm = grad.clone().square().sum().sqrt();
        // torch.optim.AdamW, single-tensor path, after clip_grad_norm_ (train::optim's formulas).
        let g = if clip > 0.0 {
            grad.clone() * (norm.clone() + 1e-6).recip().mul_scalar(clip).clamp_max(1.0)
        } else {
            grad.clone()
        };
        let p = param.clone() * (1.0 - lr * weight_decay);
        let m1 = m.clone() + (g.clone() - m.clone()) * (1.0 - beta1);
        let v1 = v.clone() * beta2 + g.clone() * g * (1.0 - beta2);
        let denom = v1.clone().sqrt() / (1.0 - beta2.powi(t)).sqrt() + eps;
        let p1 = p - m1.clone() / denom * (lr / (1.0 - beta1.powi(t)));
        let reference = Tensor::stack::<2>(vec![p1, m1, v1], 0);
        let reference = Tensor::<2>::from_data(reference.into_data(), &device);
        let step = kernels::AdamWStep {
            decay: (1.0 - lr * weight_decay) as f32,
            one_minus_beta1: (1.0 - beta1) as f32,
            beta2: beta2 as f32,
            one_minus_beta2: (1.0 - beta2) as f32,
            bias2_sqrt: (1.0 - beta2.powi(t)).sqrt() as f32,
            eps: eps as f32,
            step_size: (lr / (1.0 - beta1.powi(t))) as f32,
            clip,
        };
        let moments = Tensor::stack::<2>(vec![m, v], 0);
        let scalars = webtune::train::optim::upload(&step, &device);
        let (p, moments) = kernels::adamw(param, grad, moments, norm, scalars);
        let fused = Tensor::cat(vec![p.reshape([1, n]), moments], 0);
        close(&format!("adamw clip {clip}"), fused, reference);
    }
}

/// The update that must change nothing (the warm-up's) leaves parameters and moments bit for bit
/// as they were (NaN fails `==`), and on the GPU the update is in place: the tensor passed in reads
/// the updated values afterwards.
#[test]
fn adamw_unchanged_keeps_every_bit_and_the_gpu_updates_in_place() {
    let _serial = one_at_a_time();
    let (device, info) = webtune::device::gpu().unwrap();
    let n = 5_003;
    let param = values([n], 11, 1.0, &device);
    let grad = values([n], 12, 0.5, &device);
    let moments = Tensor::stack::<2>(vec![values([n], 13, 0.01, &device), values([n], 14, 1e-4, &device).abs()], 0);
    let before = (param.clone().into_data(), moments.clone().into_data());
    let norm = grad.clone().square().sum().sqrt();
    let unchanged = webtune::train::optim::upload(&kernels::AdamWStep::unchanged(1.0), &device);
    let (p, m) = kernels::adamw(param.clone(), grad.clone(), moments.clone(), norm.clone(), unchanged);
    assert_eq!(p.into_data().try_to_vec::<f32>().unwrap(), before.0.try_to_vec::<f32>().unwrap(), "params");
    assert_eq!(m.into_data().try_to_vec::<f32>().unwrap(), before.1.try_to_vec::<f32>().unwrap(), "moments");
    let step = kernels::AdamWStep { step_size: 0.5, ..kernels::AdamWStep::unchanged(0.0) };
    let (p, _) = kernels::adamw(param.clone(), grad, moments, norm, webtune::train::optim::upload(&step, &device));
    let updated: Vec<f32> = p.into_data().try_to_vec().unwrap();
    assert_ne!(updated, before.0.try_to_vec::<f32>().unwrap(), "the update changed nothing");
    if !info.is_cpu() {
        assert_eq!(param.into_data().try_to_vec::<f32>().unwrap(), updated, "the GPU update is in place");
    }
}

/// The optimizer's gather of many tensors into one flat buffer against `cat`, bit for bit (a copy;
/// NaN fails `==`), and their norm against `cat`'s: 1, N, N + 1 and 2N + 3 inputs of sizes from 1
/// element to 90,000 (more than 256 partial sums of squares), one a transposed view (read through
/// its strides, no copy); on a GPU, `⌈k / N⌉ + 1` dispatches.
#[test]
fn gather_matches_cat_in_few_dispatches() {
    let _serial = one_at_a_time();
    let (device, info) = webtune::device::gpu().unwrap();
    let n = kernels::GATHER_INPUTS;
    let shapes = [[1, 1], [8, 576], [3, 5], [576, 8], [1, 1], [1, 7], [130, 3], [2, 1], [1, 1], [300, 300]];
    for count in [1, n, n + 1, 2 * n + 3] {
        let tensors: Vec<Tensor<2>> = (0..count)
            .map(|i| {
                let t = values(shapes[i % shapes.len()], 20 + i as u64, 1.0, &device);
                if i == 2 { t.transpose() } else { t }
            })
            .collect();
        let ((gathered, norm), dispatches) =
            webtune::profile::count_dispatches(&device, || kernels::gather(tensors.clone())).unwrap();
        let reference = Tensor::cat(tensors.iter().map(|t| t.clone().reshape([t.shape().num_elements()])).collect(), 0);
        let reference_norm = reference.clone().square().sum().sqrt();
        close(&format!("gather of {count}: norm"), norm, reference_norm);
        let len = reference.dims()[0];
        let (got, expected) = (floats(gathered.narrow(0, 0, len)), floats(reference));
        assert_eq!(got.len(), expected.len(), "gather of {count}: length");
        let wrong = got.iter().zip(&expected).filter(|(g, e)| g != e).count();
        assert_eq!(wrong, 0, "gather of {count}: {wrong} of {} values differ from cat", got.len());
        let expected_dispatches = count.div_ceil(n) + 1;
        println!("gather of {count}: {} values, {dispatches} dispatches", got.len());
        if !info.is_cpu() {
            assert_eq!(dispatches, expected_dispatches as u64, "gather of {count}: dispatches");
        }
    }
}

#[test]
fn chunked_cross_entropy_matches_log_softmax() {
    let _serial = one_at_a_time();
    let device = gpu();
    for (rows, hidden, vocab, chunk, keep) in
        [(37, 48, 3000, 1000, false), (37, 48, 3000, 1000, true), (20, 64, 2500, 1024, false), (5, 16, 700, 700, true)]
    {
        let h = values([rows, hidden], 60, 1.0, &device);
        let head = values([vocab, hidden], 61, 0.5, &device);
        let mut rng = Rng::new(62);
        // Targets include the first and last id of a chunk.
        let mut targets: Vec<u32> = (0..rows).map(|_| rng.below(vocab) as u32).collect();
        targets[0] = 0;
        targets[1] = (chunk - 1) as u32;
        targets[2] = (vocab - 1) as u32;
        let (hf, wf) = (tracked(&h), tracked(&head));
        let fused = kernels::cross_entropy_sum_in_chunks(hf.clone(), wf.clone(), &targets, chunk, keep);
        let grads = (fused.clone() * 0.37).backward();
        let (hr, wr) = (tracked(&h), tracked(&head));
        let ids = Tensor::<2, burn::tensor::Int>::from_data(
            TensorData::new(targets.iter().map(|&t| t as i64).collect::<Vec<_>>(), [rows, 1]),
            &device,
        );
        let log_probs = burn::tensor::activation::log_softmax(hr.clone().matmul(wr.clone().transpose()), 1);
        let reference = log_probs.gather(1, ids.autodiff()).sum().neg();
        let ref_grads = (reference.clone() * 0.37).backward();
        let case = format!("cross-entropy {rows} rows, vocab {vocab} in chunks of {chunk}, logits kept {keep}");
        close(&format!("{case}: loss"), fused.inner(), reference.inner());
        close(&format!("{case}: dhidden"), hf.grad(&grads).unwrap(), hr.grad(&ref_grads).unwrap());
        close(&format!("{case}: dhead"), wf.grad(&grads).unwrap(), wr.grad(&ref_grads).unwrap());
    }
}

#[test]
fn chunked_log_sum_exp_matches_the_composed_one() {
    let _serial = one_at_a_time();
    let device = gpu();
    for (rows, hidden, vocab, chunk, keep) in
        [(37, 48, 3000, 1000, false), (37, 48, 3000, 1000, true), (6, 16, 700, 700, false)]
    {
        let h = values([rows, hidden], 63, 1.0, &device);
        let head = values([vocab, hidden], 64, 0.5, &device);
        // A different weight per row: the backward pass must read each row's own upstream gradient.
        let weights = values([rows], 65, 1.0, &device);
        let (hf, wf) = (tracked(&h), tracked(&head));
        let fused = kernels::log_sum_exp_in_chunks(hf.clone(), wf.clone(), chunk, keep);
        let grads = (fused.clone() * weights.clone().autodiff()).sum().backward();
        let (hr, wr) = (tracked(&h), tracked(&head));
        let logits = hr.clone().matmul(wr.clone().transpose());
        let max = logits.clone().max_dim(1).detach();
        let reference = ((logits - max.clone()).exp().sum_dim(1).log() + max).reshape([rows]);
        let ref_grads = (reference.clone() * weights.autodiff()).sum().backward();
        let case = format!("log-sum-exp {rows} rows, vocab {vocab} in chunks of {chunk}, logits kept {keep}");
        close(&format!("{case}: value"), fused.inner(), reference.inner());
        close(&format!("{case}: dhidden"), hf.grad(&grads).unwrap(), hr.grad(&ref_grads).unwrap());
        close(&format!("{case}: dhead"), wf.grad(&grads).unwrap(), wr.grad(&ref_grads).unwrap());
    }
}
