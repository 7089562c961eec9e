//! The fused kernels (`webtune::kernels`) against the composed tensor ops they replace: outputs and
//! gradients within 1e-4 relative to their size (`assert_gradient_close`: elementwise
//! `|d| ≤ 1e-4·max(1, |ref|)` and relative norm 1e-3; NaN fails). Run on the default device (the
//! Flex CPU backend here) and with `WEBTUNE_DEVICE=gpu` (the CubeCL kernels through wgpu, Mesa
//! lavapipe here).

mod common;

use burn::tensor::{Device, Tensor, TensorData};
use common::*;
use webtune::kernels;
use webtune::rng::Rng;

/// Seeded values in `[-scale, scale)`.
fn values<const D: usize>(shape: [usize; D], seed: u64, scale: f32, device: &Device) -> Tensor<D> {
    let mut rng = Rng::new(seed);
    let n = shape.iter().product();
    let data: Vec<f32> = (0..n).map(|_| rng.uniform(-1.0, 1.0) as f32 * scale).collect();
    Tensor::from_data(TensorData::new(data, shape), device)
}

fn tracked<const D: usize>(t: &Tensor<D>) -> Tensor<D> {
    t.clone().autodiff().require_grad()
}

/// Compares two tensors of any rank with the gradient tolerances and prints the errors.
fn close<const D: usize>(what: &str, got: Tensor<D>, expected: Tensor<D>) {
    assert_eq!(got.dims(), expected.dims(), "{what}: shape");
    let e = assert_gradient_close(what, &floats(got), &floats(expected));
    println!("{what}: max scaled error {:.2e}, relative norm {:.2e}", e.max_abs, e.rel_norm);
}

/// `x / sqrt(mean(x²) + eps) · (offset + w)`, as `model::layers::RmsNorm` composes it.
fn rms_norm_reference(x: Tensor<2>, w: Tensor<1>, eps: f64, offset: f64) -> Tensor<2> {
    let inv_rms = (x.clone().square().mean_dim(1) + eps).sqrt().recip();
    x * inv_rms * (w + offset).unsqueeze_dim(0)
}

#[test]
fn rms_norm_forward_and_backward_match_composed_ops() {
    let device = gpu();
    for (rows, d, offset) in [(37, 300, 0.0), (130, 64, 1.0), (3, 1000, 0.0)] {
        let x = values([rows, d], 1, 2.0, &device);
        let w = values([d], 2, 1.0, &device);
        let upstream = values([rows, d], 3, 1.0, &device).autodiff();
        let (xf, wf) = (tracked(&x), tracked(&w));
        let fused = kernels::rms_norm(xf.clone(), wf.clone(), 1e-5, offset as f32);
        let grads = (fused.clone() * upstream.clone()).sum().backward();
        let (xr, wr) = (tracked(&x), tracked(&w));
        let reference = rms_norm_reference(xr.clone(), wr.clone(), 1e-5, offset);
        let ref_grads = (reference.clone() * upstream).sum().backward();
        let case = format!("rms_norm {rows}x{d} offset {offset}");
        close(&format!("{case}: y"), fused.inner(), reference.inner());
        close(&format!("{case}: dx"), xf.grad(&grads).unwrap(), xr.grad(&ref_grads).unwrap());
        close(&format!("{case}: dw"), wf.grad(&grads).unwrap(), wr.grad(&ref_grads).unwrap());
    }
}

/// The model's activation, except that GELU(erf) is composed from `erf`: burn's own `gelu`
/// backward is the tanh approximation's derivative on the CubeCL backend (1.5e-3 off).
fn activation_reference(x: Tensor<2>, act: webtune::model::config::Activation) -> Tensor<2> {
    match act {
        webtune::model::config::Activation::GeluErf => {
            x.clone() * ((x * std::f64::consts::FRAC_1_SQRT_2).erf() + 1.0) * 0.5
        }
        act => webtune::model::layers::activate(x, act),
    }
}

#[test]
fn glu_forward_and_backward_match_composed_ops() {
    use webtune::model::config::Activation;
    let device = gpu();
    for act in [Activation::Silu, Activation::GeluTanh, Activation::GeluErf] {
        let (rows, cols) = (67, 150);
        let gate = values([rows, cols], 4, 6.0, &device);
        let up = values([rows, cols], 5, 2.0, &device);
        let upstream = values([rows, cols], 6, 1.0, &device).autodiff();
        let (gf, uf) = (tracked(&gate), tracked(&up));
        let fused = kernels::glu(gf.clone(), uf.clone(), act);
        let grads = (fused.clone() * upstream.clone()).sum().backward();
        let (gr, ur) = (tracked(&gate), tracked(&up));
        let reference = activation_reference(gr.clone(), act) * ur.clone();
        let ref_grads = (reference.clone() * upstream).sum().backward();
        let case = format!("glu {act:?}");
        close(&format!("{case}: out"), fused.inner(), reference.inner());
        close(&format!("{case}: dgate"), gf.grad(&grads).unwrap(), gr.grad(&ref_grads).unwrap());
        close(&format!("{case}: dup"), uf.grad(&grads).unwrap(), ur.grad(&ref_grads).unwrap());
    }
}

#[test]
fn adamw_matches_the_torch_update_in_composed_ops() {
    let device = gpu();
    let n = 70_001;
    let param = values([n], 7, 1.0, &device);
    let grad = values([n], 8, 0.05, &device);
    let m = values([n], 9, 0.01, &device);
    let v = values([n], 10, 1e-4, &device).abs();
    let (lr, beta1, beta2, eps, weight_decay, t) = (1e-2f64, 0.9f64, 0.999f64, 1e-8f64, 0.01f64, 3);
    for clip in [0.0f32, 1.0, 100.0] {
        let norm = grad.clone().square().sum().sqrt();
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
        let moments = Tensor::stack::<2>(vec![m.clone(), v.clone()], 0);
        let fused = kernels::adamw(param.clone(), grad.clone(), moments, norm.clone(), step);
        // torch.optim.AdamW, single-tensor path, after clip_grad_norm_ (train::optim's formulas).
        let g = if clip > 0.0 {
            grad.clone() * (norm + 1e-6).recip().mul_scalar(clip).clamp_max(1.0)
        } else {
            grad.clone()
        };
        let p = param.clone() * (1.0 - lr * weight_decay);
        let m1 = m.clone() + (g.clone() - m.clone()) * (1.0 - beta1);
        let v1 = v.clone() * beta2 + g.clone() * g * (1.0 - beta2);
        let denom = v1.clone().sqrt() / (1.0 - beta2.powi(t)).sqrt() + eps;
        let p1 = p - m1.clone() / denom * (lr / (1.0 - beta1.powi(t)));
        let reference = Tensor::stack::<2>(vec![p1, m1, v1], 0);
        close(&format!("adamw clip {clip}"), fused, reference);
    }
}
