//! AdamW over every trainable value at once: one elementwise kernel over flat buffers (all adapter
//! tensors end to end), with gradient-norm clipping folded in. Five bindings, within WebGPU's
//! default of eight storage buffers per stage.
//!
//! On the GPU the update is in place (the parameters and moments are rewritten where they are),
//! and its scalars are read from a small tensor ([`AdamWStep::values`]) rather than passed as
//! launch arguments: a recorded training step (`train::graph`) then runs against the same buffers
//! each time and picks up each step's learning rate and bias corrections.

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

impl AdamWStep {
    /// How many values [`AdamWStep::values`] has.
    pub const LEN: usize = 8;

    /// The scalars in the order the kernel reads them.
    pub fn values(&self) -> [f32; Self::LEN] {
        [
            self.decay,
            self.one_minus_beta1,
            self.beta2,
            self.one_minus_beta2,
            self.bias2_sqrt,
            self.eps,
            self.step_size,
            self.clip,
        ]
    }

    /// An update that leaves parameters and moments as they are (`m + (g − m)·0`, `v·1 + g²·0`,
    /// `p·1 − …·0`), for passes that run a step's kernels without training (the warm-up). A
    /// non-finite gradient still reaches the moments (`NaN·0`), as it would in a real step.
    pub fn unchanged(clip: f32) -> Self {
        AdamWStep {
            decay: 1.0,
            one_minus_beta1: 0.0,
            beta2: 1.0,
            one_minus_beta2: 0.0,
            bias2_sqrt: 1.0,
            eps: 1.0,
            step_size: 0.0,
            clip,
        }
    }
}

#[cube(launch)]
fn update_kernel<F: Float>(
    param: &mut Tensor<F>,
    grad: &Tensor<F>,
    moments: &mut Tensor<F>,
    norm: &Tensor<F>,
    scalars: &Tensor<F>,
    #[define(F)] _dtype: ElemType,
) {
    let n = param.len();
    let i = grid_thread();
    if i < n {
        let mut g = grad[i];
        let clip = scalars[7];
        if clip > F::new(0.0) {
            // torch: clip_coef = max_norm / (total_norm + 1e-6), clamped to 1.
            let coef = F::min(clip * (F::new(1.0) / (norm[0] + F::new(1e-6))), F::new(1.0));
            g *= coef;
        }
        let m = moments[i];
        let v = moments[n + i];
        let m = m + (g - m) * scalars[1];
        let v = v * scalars[2] + g * g * scalars[3];
        let denom = F::sqrt(v) / scalars[4] + scalars[5];
        param[i] = param[i] * scalars[0] - m / denom * scalars[6];
        moments[i] = m;
        moments[n + i] = v;
    }
}

pub(super) fn update_cube(
    param: CubeTensor,
    grad: CubeTensor,
    moments: CubeTensor,
    norm: CubeTensor,
    scalars: CubeTensor,
) -> (CubeTensor, CubeTensor) {
    // Written in place: a copy made here to lay them out row-major would take the update.
    assert!(param.is_contiguous() && moments.is_contiguous(), "AdamW updates contiguous parameters and moments");
    let launch = Launch::new(&param);
    let [grad, norm, scalars] = [grad, norm, scalars].map(|t| launch.contiguous(t));
    let [n] = launch.dims::<1>(&param);
    update_kernel::launch(
        &launch.client,
        row_grid(n.div_ceil(MAX_THREADS)),
        CubeDim::new_1d(MAX_THREADS as u32),
        param.clone().into_tensor_arg(),
        grad.into_tensor_arg(),
        moments.clone().into_tensor_arg(),
        norm.into_tensor_arg(),
        scalars.into_tensor_arg(),
        launch.elem(),
    );
    (param, moments)
}

/// The same update in composed tensor ops (the CPU backend's implementation; the formulas of
/// `train::optim`), into new tensors.
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(super) fn update_composed(
    param: BurnTensor<1>,
    grad: BurnTensor<1>,
    moments: BurnTensor<2>,
    norm: BurnTensor<1>,
    scalars: BurnTensor<1>,
) -> (BurnTensor<1>, BurnTensor<2>) {
    let [_, n] = moments.dims();
    let at = |k: usize| scalars.clone().narrow(0, k, 1);
    let grad = grad.narrow(0, 0, n);
    // clip > 0: min(clip / (norm + 1e-6), 1); clip 0: 1.
    let clip = at(7);
    let coef = ((norm + 1e-6).recip() * clip.clone()).clamp_max(1.0).mask_fill(clip.lower_equal_elem(0.0), 1.0);
    let grad = grad * coef;
    let m = moments.clone().narrow(0, 0, 1).reshape([n]);
    let v = moments.narrow(0, 1, 1).reshape([n]);
    let m = m.clone() + (grad.clone() - m) * at(1);
    let v = v * at(2) + grad.clone() * grad * at(3);
    let denom = v.clone().sqrt() / at(4) + at(5);
    let param = param * at(0) - m.clone() / denom * at(6);
    (param, BurnTensor::stack(vec![m, v], 0))
}
