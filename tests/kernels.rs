//! The fused layer kernels (`webtune::kernels`: RMSNorm, GLU, frozen matmul, LoRA linear) against
//! the composed tensor ops they replace, and the dispatches each fused operation launches. The
//! other kernel families are in `kernels_attention.rs` and `kernels_loss_optimizer.rs`.
//! Outputs and gradients within 1e-4 relative to their size (`assert_gradient_close`: elementwise
//! `|d| ≤ 1e-4·max(1, |ref|)` and relative norm 1e-3; NaN fails). Run on the default device (the
//! Flex CPU backend here) and with `WEBTUNE_DEVICE=gpu` (the CubeCL kernels through wgpu, Mesa
//! lavapipe here).

mod common;

use burn::tensor::{Device, Tensor, TensorData};
use common::kernel_checks::*;
use common::*;
use webtune::kernels;

#[test]
fn rms_norm_forward_and_backward_match_composed_ops() {
    let _serial = one_at_a_time();
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

#[test]
fn glu_forward_and_backward_match_composed_ops() {
    let _serial = one_at_a_time();
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

/// The packed layout (each row's gate, then its up) against the composed ops on its two halves:
/// the output, and the one gradient against both halves' gradients side by side.
#[test]
fn packed_glu_matches_composed_ops_on_the_halves() {
    let _serial = one_at_a_time();
    use webtune::model::config::Activation;
    let device = gpu();
    for act in [Activation::Silu, Activation::GeluTanh, Activation::GeluErf] {
        let (rows, cols) = (67, 150);
        let gate_up = values([rows, 2 * cols], 7, 6.0, &device);
        let upstream = values([rows, cols], 8, 1.0, &device).autodiff();
        let packed = tracked(&gate_up);
        let fused = kernels::glu_packed(packed.clone(), act);
        let grads = (fused.clone() * upstream.clone()).sum().backward();
        let (gr, ur) = (
            tracked(&gate_up.clone().slice([0..rows, 0..cols])),
            tracked(&gate_up.clone().slice([0..rows, cols..2 * cols])),
        );
        let reference = activation_reference(gr.clone(), act) * ur.clone();
        let ref_grads = (reference.clone() * upstream).sum().backward();
        let case = format!("packed glu {act:?}");
        close(&format!("{case}: out"), fused.inner(), reference.inner());
        let expected = Tensor::cat(vec![gr.grad(&ref_grads).unwrap(), ur.grad(&ref_grads).unwrap()], 1);
        close(&format!("{case}: d_gate_up"), packed.grad(&grads).unwrap(), expected);
    }
}

/// A frozen f16 weight in either layout: the product and the input gradient equal the composed
/// `x · to_f32(W)`, and the weight stays without a gradient.
#[test]
fn frozen_matmul_matches_the_product_with_the_cast_weight() {
    let _serial = one_at_a_time();
    use burn::tensor::FloatDType;
    let device = gpu();
    let (rows, inputs, outputs) = (37, 96, 80);
    let x = values([rows, inputs], 11, 1.0, &device);
    let upstream = values([rows, outputs], 12, 1.0, &device).autodiff();
    for transposed in [true, false] {
        let shape = if transposed { [outputs, inputs] } else { [inputs, outputs] };
        for dtype in [FloatDType::F16, FloatDType::F32] {
            let weight = values(shape, 13, 0.1, &device).cast(dtype);
            let used = || {
                let w = weight.clone().cast(FloatDType::F32);
                if transposed { w.transpose() } else { w }
            };
            let xf = tracked(&x);
            let fused = kernels::frozen_matmul(xf.clone(), weight.clone(), transposed);
            let grads = (fused.clone() * upstream.clone()).sum().backward();
            let xr = tracked(&x);
            let reference = xr.clone().matmul(used());
            let ref_grads = (reference.clone() * upstream.clone()).sum().backward();
            let case = format!("frozen matmul {dtype:?}, transposed {transposed}");
            close(&format!("{case}: out"), fused.inner(), reference.inner());
            close(&format!("{case}: dx"), xf.grad(&grads).unwrap(), xr.grad(&ref_grads).unwrap());
        }
    }
}

/// A LoRA layer as one node: the output and the gradients of `x`, `A` and `B` equal those of the
/// composed `x·W + s·(x·Aᵀ)·Bᵀ`, for both weight layouts and storage widths, with a row count that
/// fills no workgroup exactly, and ranks that split the forward's workgroup evenly (8), unevenly
/// (24) and exceed it (300).
#[test]
fn lora_linear_matches_composed_ops() {
    let _serial = one_at_a_time();
    use burn::tensor::FloatDType;
    let device = gpu();
    let (rows, inputs, outputs, scale) = (77, 96, 80, 2.0);
    let x = values([rows, inputs], 21, 1.0, &device);
    let upstream = values([rows, outputs], 24, 1.0, &device).autodiff();
    for (r, transposed) in [(8, true), (8, false), (24, true), (300, false)] {
        let a = values([r, inputs], 22, 0.3, &device);
        let b = values([outputs, r], 23, 0.3, &device);
        let shape = if transposed { [outputs, inputs] } else { [inputs, outputs] };
        for dtype in [FloatDType::F16, FloatDType::F32] {
            let weight = values(shape, 25, 0.1, &device).cast(dtype);
            let (xf, af, bf) = (tracked(&x), tracked(&a), tracked(&b));
            let fused =
                kernels::lora_linear(xf.clone(), weight.clone(), transposed, af.clone(), bf.clone(), scale, None);
            let grads = (fused.clone() * upstream.clone()).sum().backward();
            let (xr, ar, br) = (tracked(&x), tracked(&a), tracked(&b));
            let w = weight.clone().cast(FloatDType::F32);
            let w = if transposed { w.transpose() } else { w };
            let reference =
                xr.clone().matmul(w) + xr.clone().matmul(ar.clone().transpose()).matmul(br.clone().transpose()) * scale;
            let ref_grads = (reference.clone() * upstream.clone()).sum().backward();
            let case = format!("lora r {r} {dtype:?}, transposed {transposed}");
            close(&format!("{case}: out"), fused.inner(), reference.inner());
            close(&format!("{case}: dx"), xf.grad(&grads).unwrap(), xr.grad(&ref_grads).unwrap());
            close(&format!("{case}: dA"), af.grad(&grads).unwrap(), ar.grad(&ref_grads).unwrap());
            close(&format!("{case}: dB"), bf.grad(&grads).unwrap(), br.grad(&ref_grads).unwrap());
        }
    }
}

/// Gradients that meet at a shared input, as in a decoder layer: the residual stream `x` feeds an
/// RMSNorm and the residual add, the normed `h` three LoRA layers (q/k/v) and a plain product. The
/// RMSNorm's backward kernel adds the gradient the residual add gave `x` where it writes its own;
/// `dx` and each factor's gradient equal the composed graph's.
#[test]
fn gradients_meeting_at_a_shared_input_match_composed_ops() {
    let _serial = one_at_a_time();
    let device = gpu();
    let (rows, hidden, outputs, r, scale) = (45, 96, 80, 8, 2.0);
    let x = values([rows, hidden], 90, 1.0, &device);
    let norm = values([hidden], 91, 1.0, &device);
    let weights: Vec<Tensor<2>> = (0..3).map(|i| values([outputs, hidden], 92 + i, 0.1, &device)).collect();
    let factors: Vec<(Tensor<2>, Tensor<2>)> = (0..3)
        .map(|i| (values([r, hidden], 95 + i, 0.3, &device), values([outputs, r], 98 + i, 0.3, &device)))
        .collect();
    let plain = values([hidden, hidden], 101, 0.1, &device);
    let upstream = values([rows, hidden], 102, 1.0, &device).autodiff();
    // The sub-block's output: the three projections read back to the hidden size, plus the residual.
    let layer = |fused: bool| {
        let xt = tracked(&x);
        let ab: Vec<(Tensor<2>, Tensor<2>)> = factors.iter().map(|(a, b)| (tracked(a), tracked(b))).collect();
        let h = if fused {
            kernels::rms_norm(xt.clone(), norm.clone(), 1e-5, 0.0)
        } else {
            rms_norm_reference(xt.clone(), norm.clone(), 1e-5, 0.0)
        };
        let mut out = xt.clone() + h.clone().matmul(plain.clone());
        for (w, (a, b)) in weights.iter().zip(&ab) {
            let y = if fused {
                kernels::lora_linear(h.clone(), w.clone(), true, a.clone(), b.clone(), scale, None)
            } else {
                h.clone().matmul(w.clone().transpose())
                    + h.clone().matmul(a.clone().transpose()).matmul(b.clone().transpose()) * scale
            };
            out = out + y.matmul(w.clone());
        }
        let grads = (out * upstream.clone()).sum().backward();
        let mut all = vec![xt.grad(&grads).unwrap()];
        for (a, b) in &ab {
            all.push(a.grad(&grads).unwrap());
            all.push(b.grad(&grads).unwrap());
        }
        all
    };
    let (fused, reference) = (layer(true), layer(false));
    for (i, (got, expected)) in fused.into_iter().zip(reference).enumerate() {
        let what =
            if i == 0 { "dx".to_string() } else { format!("factor {} d{}", (i - 1) / 2, ["A", "B"][(i - 1) % 2]) };
        close(&what, got, expected);
    }
}

/// Kernel launches of a forward and backward pass (0 on the CPU backend, which launches none),
/// less those of the test's own scaffolding: summing an output of the same shape and
/// differentiating the sum.
fn dispatches<const D: usize>(device: &Device, output: [usize; D], pass: impl FnOnce() -> Vec<Tensor<2>>) -> u64 {
    let scaffold = webtune::profile::count_dispatches(device, || {
        let out = Tensor::<D>::zeros(output, device).autodiff().require_grad();
        let g = out.clone().sum().backward();
        out.grad(&g).unwrap()
    })
    .unwrap()
    .1;
    webtune::profile::count_dispatches(device, pass).unwrap().1.saturating_sub(scaffold)
}

/// Dispatches of each fused operation (forward + backward) against the composed ops it replaces,
/// at SmolLM2-135M's shapes (one row of 64 tokens; frozen norm weights, as in LoRA training).
/// Figures; the bounds are the fused kernels' own launches.
#[test]
fn fused_operations_launch_few_kernels() {
    let _serial = one_at_a_time();
    use webtune::model::config::Activation;
    let device = gpu();
    let (tokens, hidden, heads, kv_heads, d, inter) = (64, 576, 9, 3, 64, 1536);
    let flat = |t: Tensor<4>| {
        let [a, b, c, e] = t.dims();
        t.reshape([a * b, c * e])
    };
    let mut rows = Vec::new();
    // RMSNorm.
    let x = values([tokens, hidden], 70, 1.0, &device);
    let w = values([hidden], 71, 1.0, &device);
    let fused = dispatches(&device, [tokens, hidden], || {
        let xt = tracked(&x);
        let g = kernels::rms_norm(xt.clone(), w.clone(), 1e-5, 0.0).sum().backward();
        vec![xt.grad(&g).unwrap()]
    });
    let composed = dispatches(&device, [tokens, hidden], || {
        let xt = tracked(&x);
        let g = rms_norm_reference(xt.clone(), w.clone(), 1e-5, 0.0).sum().backward();
        vec![xt.grad(&g).unwrap()]
    });
    rows.push(("rms_norm", fused, composed, 2));
    // SwiGLU.
    let (gate, up) = (values([tokens, inter], 72, 2.0, &device), values([tokens, inter], 73, 1.0, &device));
    let fused = dispatches(&device, [tokens, inter], || {
        let (gt, ut) = (tracked(&gate), tracked(&up));
        let g = kernels::glu(gt.clone(), ut.clone(), Activation::Silu).sum().backward();
        vec![gt.grad(&g).unwrap(), ut.grad(&g).unwrap()]
    });
    let composed = dispatches(&device, [tokens, inter], || {
        let (gt, ut) = (tracked(&gate), tracked(&up));
        let g = (activation_reference(gt.clone(), Activation::Silu) * ut.clone()).sum().backward();
        vec![gt.grad(&g).unwrap(), ut.grad(&g).unwrap()]
    });
    rows.push(("swiglu", fused, composed, 2));
    // A LoRA q_proj (r 8).
    let (xq, wq) = (values([tokens, hidden], 79, 1.0, &device), values([hidden, hidden], 80, 0.1, &device));
    let (aq, bq) = (values([8, hidden], 81, 0.1, &device), values([hidden, 8], 82, 0.1, &device));
    let fused = dispatches(&device, [tokens, hidden], || {
        let (xt, at, bt) = (tracked(&xq), tracked(&aq), tracked(&bq));
        let g = kernels::lora_linear(xt.clone(), wq.clone(), true, at.clone(), bt.clone(), 2.0, None).sum().backward();
        vec![xt.grad(&g).unwrap(), at.grad(&g).unwrap(), bt.grad(&g).unwrap()]
    });
    let composed = dispatches(&device, [tokens, hidden], || {
        let (xt, at, bt) = (tracked(&xq), tracked(&aq), tracked(&bq));
        let lora = xt.clone().matmul(at.clone().transpose()).matmul(bt.clone().transpose()) * 2.0;
        let g = (xt.clone().matmul(wq.clone().transpose()) + lora).sum().backward();
        vec![xt.grad(&g).unwrap(), at.grad(&g).unwrap(), bt.grad(&g).unwrap()]
    });
    rows.push(("lora linear", fused, composed, 6));
    // Attention with RoPE, GQA, padding.
    let q = values([1, tokens, heads, d], 74, 1.0, &device);
    let k = values([1, tokens, kv_heads, d], 75, 1.0, &device);
    let v = values([1, tokens, kv_heads, d], 76, 1.0, &device);
    let mask: Vec<u8> = (0..tokens).map(|j| u8::from(j < tokens - 5)).collect();
    let tables = rope_tables(tokens, d);
    let inputs = kernels::AttentionInputs::new(
        1,
        tokens,
        Some(&mask),
        Some((tables.0.as_slice(), tables.1.as_slice())),
        &device,
    );
    let fused = dispatches(&device, [1, tokens, heads, d], || {
        let (qt, kt, vt) = (tracked(&q), tracked(&k), tracked(&v));
        let g = kernels::attention(qt.clone(), kt.clone(), vt.clone(), &inputs, 0.125, None).sum().backward();
        vec![flat(qt.grad(&g).unwrap()), flat(kt.grad(&g).unwrap()), flat(vt.grad(&g).unwrap())]
    });
    let composed = dispatches(&device, [1, tokens, heads, d], || {
        let (qt, kt, vt) = (tracked(&q), tracked(&k), tracked(&v));
        let out = attention_reference(qt.clone(), kt.clone(), vt.clone(), &mask, Some(&tables), 0.125, None);
        let g = out.sum().backward();
        vec![flat(qt.grad(&g).unwrap()), flat(kt.grad(&g).unwrap()), flat(vt.grad(&g).unwrap())]
    });
    rows.push(("attention + rope", fused, composed, 3));
    // Cross-entropy over a 49,152-token vocabulary.
    let h = values([tokens, hidden], 77, 1.0, &device);
    let head = values([49_152, hidden], 78, 0.1, &device);
    let targets: Vec<u32> = (0..tokens as u32).map(|i| i * 700).collect();
    let fused = dispatches(&device, [1], || {
        let ht = tracked(&h);
        let g = kernels::cross_entropy_sum(ht.clone(), head.clone(), &targets).backward();
        vec![ht.grad(&g).unwrap()]
    });
    let composed = dispatches(&device, [1], || {
        let ht = tracked(&h);
        let ids = Tensor::<2, burn::tensor::Int>::from_data(
            TensorData::new(targets.iter().map(|&t| t as i64).collect::<Vec<_>>(), [tokens, 1]),
            &device,
        );
        let log_probs = burn::tensor::activation::log_softmax(ht.clone().matmul(head.clone().transpose()), 1);
        let g = log_probs.gather(1, ids.autodiff()).sum().neg().backward();
        vec![ht.grad(&g).unwrap()]
    });
    rows.push(("cross-entropy", fused, composed, 8));
    for (name, fused, composed, bound) in &rows {
        println!("{name}: {fused} dispatches fused, {composed} composed (forward and backward)");
        if *composed > 0 {
            assert!(fused <= bound, "{name}: {fused} dispatches, more than {bound}");
        }
    }
}
