//! What the kernel tests (`tests/kernels*.rs`) share: seeded inputs, the comparison with the
//! gradient tolerances, and the composed ops each fused kernel replaces, as references.

use burn::tensor::{Device, Tensor, TensorData};
use webtune::rng::Rng;

use super::{assert_gradient_close, floats};

/// Kernel counts are process-wide, so the tests of a kernel test binary run one at a time.
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Seeded values in `[-scale, scale)`.
pub fn values<const D: usize>(shape: [usize; D], seed: u64, scale: f32, device: &Device) -> Tensor<D> {
    let mut rng = Rng::new(seed);
    let n = shape.iter().product();
    let data: Vec<f32> = (0..n).map(|_| rng.uniform(-1.0, 1.0) as f32 * scale).collect();
    Tensor::from_data(TensorData::new(data, shape), device)
}

pub fn tracked<const D: usize>(t: &Tensor<D>) -> Tensor<D> {
    t.clone().autodiff().require_grad()
}

/// Compares two tensors of any rank with the gradient tolerances and prints the errors.
pub fn close<const D: usize>(what: &str, got: Tensor<D>, expected: Tensor<D>) {
    assert_eq!(got.dims(), expected.dims(), "{what}: shape");
    let e = assert_gradient_close(what, &floats(got), &floats(expected));
    println!("{what}: max scaled error {:.2e}, relative norm {:.2e}", e.max_abs, e.rel_norm);
}

/// `x / sqrt(mean(x²) + eps) · (offset + w)`, as `model::layers::RmsNorm` composes it.
pub fn rms_norm_reference(x: Tensor<2>, w: Tensor<1>, eps: f64, offset: f64) -> Tensor<2> {
    let inv_rms = (x.clone().square().mean_dim(1) + eps).sqrt().recip();
    x * inv_rms * (w + offset).unsqueeze_dim(0)
}

/// The model's activation, except that GELU(erf) is composed from `erf`: burn's own `gelu`
/// backward is the tanh approximation's derivative on the CubeCL backend (1.5e-3 off).
pub fn activation_reference(x: Tensor<2>, act: webtune::model::config::Activation) -> Tensor<2> {
    match act {
        webtune::model::config::Activation::GeluErf => {
            x.clone() * ((x * std::f64::consts::FRAC_1_SQRT_2).erf() + 1.0) * 0.5
        }
        act => webtune::model::layers::activate(x, act),
    }
}

/// RoPE tables `[len, d]` as transformers computes them (θ = 10,000): `cat(freqs, freqs)`.
pub fn rope_tables(len: usize, d: usize) -> (Vec<f32>, Vec<f32>) {
    let inv_freq: Vec<f32> = (0..d / 2).map(|i| 1.0 / 10_000f32.powf((2 * i) as f32 / d as f32)).collect();
    let angles: Vec<f32> =
        (0..len).flat_map(|p| (0..d).map(|c| p as f32 * inv_freq[c % (d / 2)]).collect::<Vec<_>>()).collect();
    (angles.iter().map(|a| a.cos()).collect(), angles.iter().map(|a| a.sin()).collect())
}

/// Whether query `i` sees key `j`.
pub fn sees(i: usize, j: usize, window: Option<usize>, key_real: bool) -> bool {
    j <= i && window.is_none_or(|w| i - j < w) && key_real
}

/// Transformers' eager attention: RoPE (`x·cos + rotate_half(x)·sin`), `repeat_kv`, scores plus an
/// additive `f32::MIN` mask, softmax, values. Token-major `[b, len, heads, d]` in and out.
#[allow(clippy::too_many_arguments)]
pub fn attention_reference(
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
