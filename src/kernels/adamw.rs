//! AdamW over every trainable value at once: one elementwise kernel over flat buffers (all adapter
//! tensors end to end), with gradient-norm clipping folded in. Five bindings, within WebGPU's
//! default of eight storage buffers per stage.

use burn::tensor::Tensor as BurnTensor;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use super::cube::{Launch, MAX_THREADS, grid_thread, row_grid};

/// The scalars of one AdamW update, as `torch.optim.AdamW` (single-tensor path) computes them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWStep {
    /// `1 − lr·weight_decay`.
    pub decay: f32,
    /// `1 − β₁`.
    pub one_minus_beta1: f32,
    pub beta2: f32,
    /// `1 − β₂`.
    pub one_minus_beta2: f32,
    /// `√(1 − β₂ᵗ)`.
    pub bias2_sqrt: f32,
    pub eps: f32,
    /// `lr / (1 − β₁ᵗ)`.
    pub step_size: f32,
    /// Clip the gradient to this global norm (torch's `clip_grad_norm_`); 0 for none.
    pub clip: f32,
}

#[cube(launch)]
fn update_kernel<F: Float>(
    param: &Tensor<F>,
    grad: &Tensor<F>,
    moments: &Tensor<F>,
    norm: &Tensor<F>,
    out: &mut Tensor<F>,
    decay: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    bias2_sqrt: f32,
    eps: f32,
    step_size: f32,
    clip: f32,
    #[define(F)] _dtype: ElemType,
) {
    let n = param.len();
    let i = grid_thread();
    if i < n {
        let mut g = grad[i];
        if clip > 0.0 {
            // torch: clip_coef = max_norm / (total_norm + 1e-6), clamped to 1.
            let coef = F::min(F::cast_from(clip) * (F::new(1.0) / (norm[0] + F::new(1e-6))), F::new(1.0));
            g *= coef;
        }
        let m = moments[i];
        let v = moments[n + i];
        let m = m + (g - m) * F::cast_from(one_minus_beta1);
        let v = v * F::cast_from(beta2) + g * g * F::cast_from(one_minus_beta2);
        let denom = F::sqrt(v) / F::cast_from(bias2_sqrt) + F::cast_from(eps);
        out[i] = param[i] * F::cast_from(decay) - m / denom * F::cast_from(step_size);
        out[n + i] = m;
        out[2 * n + i] = v;
    }
}

pub(super) fn update_cube(
    param: CubeTensor,
    grad: CubeTensor,
    moments: CubeTensor,
    norm: CubeTensor,
    step: AdamWStep,
) -> CubeTensor {
    let launch = Launch::new(&param);
    let [param, grad, moments, norm] = [param, grad, moments, norm].map(|t| launch.contiguous(t));
    let [n] = launch.dims::<1>(&param);
    let out = launch.empty([3, n]);
    update_kernel::launch(
        &launch.client,
        row_grid(n.div_ceil(MAX_THREADS)),
        CubeDim::new_1d(MAX_THREADS as u32),
        param.into_tensor_arg(),
        grad.into_tensor_arg(),
        moments.into_tensor_arg(),
        norm.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        step.decay,
        step.one_minus_beta1,
        step.beta2,
        step.one_minus_beta2,
        step.bias2_sqrt,
        step.eps,
        step.step_size,
        step.clip,
        launch.elem(),
    );
    out
}

/// The same update in composed tensor ops (the CPU backend's implementation; the formulas of
/// `train::optim`).
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(super) fn update_composed(
    param: BurnTensor<1>,
    grad: BurnTensor<1>,
    moments: BurnTensor<2>,
    norm: BurnTensor<1>,
    step: AdamWStep,
) -> BurnTensor<2> {
    let [_, n] = moments.dims();
    let grad = grad.narrow(0, 0, n);
    let grad = if step.clip > 0.0 { grad * (norm + 1e-6).recip().mul_scalar(step.clip).clamp_max(1.0) } else { grad };
    let m = moments.clone().narrow(0, 0, 1).reshape([n]);
    let v = moments.narrow(0, 1, 1).reshape([n]);
    let m = m.clone() + (grad.clone() - m) * step.one_minus_beta1;
    let v = v * step.beta2 + grad.clone() * grad * step.one_minus_beta2;
    let denom = v.clone().sqrt() / step.bias2_sqrt + step.eps;
    let param = param * step.decay - m.clone() / denom * step.step_size;
    BurnTensor::stack(vec![param, m, v], 0)
}
