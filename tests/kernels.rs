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

/// Kernel counts are process-wide, so the tests of this file run one at a time.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

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

#[test]
fn adamw_matches_the_torch_update_in_composed_ops() {
    let _serial = one_at_a_time();
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

/// RoPE tables `[len, d]` as transformers computes them (θ = 10,000): `cat(freqs, freqs)`.
fn rope_tables(len: usize, d: usize) -> (Vec<f32>, Vec<f32>) {
    let inv_freq: Vec<f32> = (0..d / 2).map(|i| 1.0 / 10_000f32.powf((2 * i) as f32 / d as f32)).collect();
    let angles: Vec<f32> =
        (0..len).flat_map(|p| (0..d).map(|c| p as f32 * inv_freq[c % (d / 2)]).collect::<Vec<_>>()).collect();
    (angles.iter().map(|a| a.cos()).collect(), angles.iter().map(|a| a.sin()).collect())
}

/// Whether query `i` sees key `j`.
fn sees(i: usize, j: usize, window: Option<usize>, key_real: bool) -> bool {
    j <= i && window.is_none_or(|w| i - j < w) && key_real
}

/// Transformers' eager attention: RoPE (`x·cos + rotate_half(x)·sin`), `repeat_kv`, scores plus an
/// additive `f32::MIN` mask, softmax, values. Token-major `[b, len, heads, d]` in and out.
#[allow(clippy::too_many_arguments)]
fn attention_reference(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    key_mask: &[u8],
    rope: Option<&(Vec<f32>, Vec<f32>)>,
    scale: f64,
    window: Option<usize>,
) -> Tensor<4> {
    let [b, len, heads, d] = q.dims();
    let kv_heads = k.dims()[2];
    let device = q.device();
    let (mut q, mut k, v) = (q.swap_dims(1, 2), k.swap_dims(1, 2), v.swap_dims(1, 2));
    if let Some((cos, sin)) = rope {
        let table = |t: &Vec<f32>| Tensor::<4>::from_data(TensorData::new(t.clone(), [1, 1, len, d]), &device);
        let (cos, sin) = (table(cos), table(sin));
        let rotate = |x: Tensor<4>| {
            let first = x.clone().narrow(3, 0, d / 2);
            let second = x.clone().narrow(3, d / 2, d / 2);
            x * cos.clone() + Tensor::cat(vec![second.neg(), first], 3) * sin.clone()
        };
        q = rotate(q);
        k = rotate(k);
    }
    let repeat = |x: Tensor<4>| {
        let groups = heads / kv_heads;
        x.unsqueeze_dim::<5>(2).expand([b, kv_heads, groups, len, d]).reshape([b, heads, len, d])
    };
    let mut bias = Vec::with_capacity(b * len * len);
    for row in 0..b {
        for i in 0..len {
            for j in 0..len {
                bias.push(if sees(i, j, window, key_mask[row * len + j] != 0) { 0.0 } else { f32::MIN });
            }
        }
    }
    let bias = Tensor::<4>::from_data(TensorData::new(bias, [b, 1, len, len]), &device);
    let scores = q.matmul(repeat(k).swap_dims(2, 3)) * scale + bias;
    burn::tensor::activation::softmax(scores, 3).matmul(repeat(v)).swap_dims(1, 2)
}

struct AttentionCase {
    batch: usize,
    len: usize,
    heads: usize,
    kv_heads: usize,
    d: usize,
    rope: bool,
    window: Option<usize>,
    /// `key_mask[b][j]`.
    padded: fn(usize, usize) -> bool,
}

#[test]
fn attention_forward_and_backward_match_eager_attention() {
    let _serial = one_at_a_time();
    let device = gpu();
    let mut cases = vec![
        // Right padding, RoPE, grouped-query heads.
        AttentionCase {
            batch: 2,
            len: 37,
            heads: 4,
            kv_heads: 2,
            d: 16,
            rope: true,
            window: None,
            padded: |b, j| b == 1 && j >= 27,
        },
        // Left padding (queries 0..5 of row 1 see no key) and a sliding window over a padded gap
        // (queries 17..19 of row 0 see only padding).
        AttentionCase {
            batch: 2,
            len: 40,
            heads: 2,
            kv_heads: 1,
            d: 32,
            rope: true,
            window: Some(8),
            padded: |b, j| (b == 1 && j < 5) || (b == 0 && (10..20).contains(&j)),
        },
        // Several tiles of keys and of queries, three query heads per kv head, no RoPE.
        AttentionCase {
            batch: 1,
            len: 130,
            heads: 3,
            kv_heads: 1,
            d: 64,
            rope: false,
            window: None,
            padded: |_, _| false,
        },
        // Qwen3's and Gemma 3's head sizes.
        AttentionCase {
            batch: 1,
            len: 33,
            heads: 2,
            kv_heads: 2,
            d: 128,
            rope: true,
            window: Some(20),
            padded: |_, j| j == 3,
        },
        AttentionCase {
            batch: 1,
            len: 20,
            heads: 2,
            kv_heads: 1,
            d: 256,
            rope: true,
            window: None,
            padded: |_, _| false,
        },
    ];
    // The longest sequences the loop budget admits on llvmpipe (the limit the model checks
    // before it uses the kernel there): the last workgroup's rows must still be written.
    let limit = webtune::device::info_of(&device).shader_loop_limit.or(Some(65_535));
    for (heads, kv_heads, d) in [(1, 1, 64), (2, 1, 64), (1, 1, 128)] {
        let fits = |len| kernels::attention_fits(&kernels::AttentionShape { batch: 1, len, heads, kv_heads, d }, limit);
        let len = (1..).take_while(|&len| fits(len)).last().expect("one token fits");
        assert!(!fits(len + 1) && len > 100, "{heads}/{kv_heads} heads, d {d}: longest fitting length {len}");
        cases.push(AttentionCase { batch: 1, len, heads, kv_heads, d, rope: true, window: None, padded: |_, _| false });
    }
    for (n, c) in cases.iter().enumerate() {
        let name = format!(
            "attention case {n} (b {} len {} heads {}/{} d {} rope {} window {:?})",
            c.batch, c.len, c.heads, c.kv_heads, c.d, c.rope, c.window
        );
        let key_mask: Vec<u8> = (0..c.batch * c.len).map(|x| u8::from(!(c.padded)(x / c.len, x % c.len))).collect();
        // Rows that see no key: eager attention gives them the uniform softmax and, through
        // autodiff, spurious q/k gradients; the kernels give none. Compared separately below.
        let blind: Vec<bool> = (0..c.batch * c.len)
            .map(|x| !(0..c.len).any(|j| sees(x % c.len, j, c.window, key_mask[(x / c.len) * c.len + j] != 0)))
            .collect();
        let tables = c.rope.then(|| rope_tables(c.len, c.d));
        let inputs = kernels::AttentionInputs::new(
            c.batch,
            c.len,
            Some(&key_mask),
            tables.as_ref().map(|(cos, sin)| (cos.as_slice(), sin.as_slice())),
            &device,
        );
        let scale = 1.0 / (c.d as f64).sqrt();
        let q = values([c.batch, c.len, c.heads, c.d], 20 + n as u64, 1.5, &device);
        let k = values([c.batch, c.len, c.kv_heads, c.d], 30 + n as u64, 1.5, &device);
        let v = values([c.batch, c.len, c.kv_heads, c.d], 40 + n as u64, 1.0, &device);
        let upstream = values([c.batch, c.len, c.heads, c.d], 50 + n as u64, 1.0, &device);
        let row_weights = |blind_rows: bool| {
            let w: Vec<f32> = blind.iter().map(|&b| if b == blind_rows { 1.0 } else { 0.0 }).collect();
            Tensor::<1>::from_data(TensorData::new(w, [c.batch * c.len]), &device).reshape([c.batch, c.len, 1, 1])
        };
        let run = |fused: bool, weights: Tensor<4>| {
            let (qt, kt, vt) = (tracked(&q), tracked(&k), tracked(&v));
            let out = if fused {
                kernels::attention(qt.clone(), kt.clone(), vt.clone(), &inputs, scale, c.window)
            } else {
                attention_reference(qt.clone(), kt.clone(), vt.clone(), &key_mask, tables.as_ref(), scale, c.window)
            };
            let grads = (out.clone() * (upstream.clone() * weights).autodiff()).sum().backward();
            let grad = |t: &Tensor<4>| t.grad(&grads).unwrap();
            (out.inner(), grad(&qt), grad(&kt), grad(&vt))
        };
        let (out, dq, dk, dv) = run(true, row_weights(false));
        let (ref_out, ref_dq, ref_dk, ref_dv) = run(false, row_weights(false));
        close(&format!("{name}: out"), out, ref_out);
        close(&format!("{name}: dq"), dq, ref_dq);
        close(&format!("{name}: dk"), dk, ref_dk);
        close(&format!("{name}: dv"), dv, ref_dv);
        if blind.iter().any(|&b| b) {
            let (_, dq, dk, dv) = run(true, row_weights(true));
            let (_, _, _, ref_dv) = run(false, row_weights(true));
            for (what, g) in [("dq", dq), ("dk", dk)] {
                let worst = max_abs_diff(&floats(g.clone()), &vec![0.0; g.shape().num_elements()]);
                println!("{name}: {what} from rows that see no key: max {worst:.1e}");
                assert!(worst == 0.0, "{name}: rows that see no key passed {what} {worst}");
            }
            close(&format!("{name}: dv from rows that see no key"), dv, ref_dv);
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
