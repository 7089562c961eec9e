//! RMSNorm: one kernel forward, one backward, one workgroup per row (the row's sum of squares is
//! reduced in workgroup memory).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, TensorMetadata};
use burn::tensor::Tensor as BurnTensor;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use super::FusedKernels;
use super::cube::{Launch, grid_row, row_grid, threads_for, workgroup_sum};

#[cube(launch)]
fn forward_kernel<F: Float>(
    x: &Tensor<F>,
    weight: &Tensor<F>,
    y: &mut Tensor<F>,
    inv_rms: &mut Tensor<F>,
    eps: f32,
    offset: f32,
    #[comptime] threads: usize,
    #[define(F)] _dtype: ElemType,
) {
    let rows = x.shape(0);
    let d = x.shape(1);
    let row = grid_row();
    if row >= rows {
        terminate!();
    }
    let unit = UNIT_POS as usize;
    let base = row * d;
    let mut partial = Shared::<[F]>::new_slice(threads);
    let mut sum = F::new(0.0);
    let mut i = unit;
    while i < d {
        let v = x[base + i];
        sum += v * v;
        i += threads;
    }
    partial[unit] = sum;
    workgroup_sum::<F>(&mut partial, threads);
    let r = F::new(1.0) / F::sqrt(partial[0] / F::cast_from(d) + F::cast_from(eps));
    if unit == 0 {
        inv_rms[row] = r;
    }
    let mut j = unit;
    while j < d {
        y[base + j] = x[base + j] * r * (F::cast_from(offset) + weight[j]);
        j += threads;
    }
}

#[cube(launch)]
fn backward_kernel<F: Float>(
    x: &Tensor<F>,
    weight: &Tensor<F>,
    inv_rms: &Tensor<F>,
    dy: &Tensor<F>,
    other: &Tensor<F>,
    dx: &mut Tensor<F>,
    offset: f32,
    #[comptime] threads: usize,
    #[comptime] add_other: bool,
    #[define(F)] _dtype: ElemType,
) {
    let rows = x.shape(0);
    let d = x.shape(1);
    let row = grid_row();
    if row >= rows {
        terminate!();
    }
    let unit = UNIT_POS as usize;
    let base = row * d;
    let offset = F::cast_from(offset);
    let mut partial = Shared::<[F]>::new_slice(threads);
    let mut sum = F::new(0.0);
    let mut i = unit;
    while i < d {
        sum += dy[base + i] * (offset + weight[i]) * x[base + i];
        i += threads;
    }
    partial[unit] = sum;
    workgroup_sum::<F>(&mut partial, threads);
    let r = inv_rms[row];
    let correction = r * r * partial[0] / F::cast_from(d);
    let mut j = unit;
    while j < d {
        let g = dy[base + j] * (offset + weight[j]);
        let mut value = r * (g - x[base + j] * correction);
        if comptime![add_other] {
            value += other[base + j];
        }
        dx[base + j] = value;
        j += threads;
    }
}

pub(super) fn forward_cube(x: CubeTensor, weight: CubeTensor, eps: f32, offset: f32) -> (CubeTensor, CubeTensor) {
    let launch = Launch::new(&x);
    let (x, weight) = (launch.contiguous(x), launch.contiguous(weight));
    let [rows, d] = launch.dims::<2>(&x);
    let y = launch.empty([rows, d]);
    let inv_rms = launch.empty([rows]);
    let threads = threads_for(d);
    forward_kernel::launch(
        &launch.client,
        row_grid(rows),
        CubeDim::new_1d(threads as u32),
        x.into_tensor_arg(),
        weight.into_tensor_arg(),
        y.clone().into_tensor_arg(),
        inv_rms.clone().into_tensor_arg(),
        eps,
        offset,
        threads,
        launch.elem(),
    );
    (y, inv_rms)
}

pub(super) fn backward_cube(
    x: CubeTensor,
    weight: CubeTensor,
    inv_rms: CubeTensor,
    dy: CubeTensor,
    other: Option<CubeTensor>,
    offset: f32,
) -> CubeTensor {
    let launch = Launch::new(&x);
    let [x, weight, inv_rms, dy] = [x, weight, inv_rms, dy].map(|t| launch.contiguous(t));
    let add_other = other.is_some();
    // Without another gradient, any binding that is only read stands in for it.
    let other = other.map_or_else(|| dy.clone(), |t| launch.contiguous(t));
    let [rows, d] = launch.dims::<2>(&x);
    let dx = launch.empty([rows, d]);
    let threads = threads_for(d);
    backward_kernel::launch(
        &launch.client,
        row_grid(rows),
        CubeDim::new_1d(threads as u32),
        x.into_tensor_arg(),
        weight.into_tensor_arg(),
        inv_rms.into_tensor_arg(),
        dy.into_tensor_arg(),
        other.into_tensor_arg(),
        dx.clone().into_tensor_arg(),
        offset,
        threads,
        add_other,
        launch.elem(),
    );
    dx
}

/// The same computation in composed tensor ops (the CPU backend's implementation).
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(super) fn forward_composed(
    x: BurnTensor<2>,
    weight: BurnTensor<1>,
    eps: f32,
    offset: f32,
) -> (BurnTensor<2>, BurnTensor<1>) {
    let inv_rms = (x.clone().square().mean_dim(1) + eps as f64).sqrt().recip();
    let y = x * inv_rms.clone() * (weight + offset as f64).unsqueeze_dim(0);
    (y, inv_rms.squeeze_dim(1))
}

#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(super) fn backward_composed(
    x: BurnTensor<2>,
    weight: BurnTensor<1>,
    inv_rms: BurnTensor<1>,
    dy: BurnTensor<2>,
    other: Option<BurnTensor<2>>,
    offset: f32,
) -> BurnTensor<2> {
    let r = inv_rms.unsqueeze_dim(1);
    let g = dy * (weight + offset as f64).unsqueeze_dim(0);
    let correction = r.clone() * r.clone() * (g.clone() * x.clone()).mean_dim(1);
    let dx = r * (g - x * correction);
    other.map_or(dx.clone(), |other| dx + other)
}

#[derive(Debug)]
struct RmsNormBackward;

impl<B: FusedKernels> Backward<B, 2> for RmsNormBackward {
    /// `x` (as autodiff tracks it, to find the gradient other consumers of `x` gave it),
    /// `weight`, `r` and the weight offset.
    type State = (FloatTensor<Autodiff<B>>, FloatTensor<B>, FloatTensor<B>, f32);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_weight] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (tracked_x, weight, inv_rms, offset) = ops.state;
        let x = tracked_x.primitive().clone();
        if let Some(node) = node_weight {
            // dweight = Σ_rows dy · x · r: composed ops, only when the weight is trained.
            let rows = x.shape()[0];
            let normed = B::float_mul(x.clone(), B::float_reshape(inv_rms.clone(), [rows, 1].into()));
            let dweight = B::float_sum_dim(B::float_mul(dy.clone(), normed), 0);
            grads.register::<B>(node.id, B::float_reshape(dweight, weight.shape().clone()));
        }
        if let Some(node) = node_x {
            // The residual stream `x` also feeds the residual add, whose backward pass ran first:
            // its gradient is added where `dx` is written.
            let other = grads.remove::<B>(&tracked_x);
            let add_other = other.is_some();
            let other = other.unwrap_or_else(|| dy.clone());
            grads.register::<B>(node.id, B::rms_norm_backward(x, weight, inv_rms, dy, other, add_other, offset));
        }
    }
}

pub(super) fn autodiff<B: FusedKernels, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
    eps: f32,
    offset: f32,
) -> FloatTensor<Autodiff<B, C>> {
    match RmsNormBackward.prepare::<C>([x.node(), weight.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let tracked_x = x.clone();
            let (x, weight) = (x.into_primitive(), weight.into_primitive());
            let (y, inv_rms) = B::rms_norm_forward(x, weight.clone(), eps, offset);
            prep.finish((tracked_x, weight, inv_rms, offset), y)
        }
        OpsKind::UnTracked(prep) => {
            prep.finish(B::rms_norm_forward(x.into_primitive(), weight.into_primitive(), eps, offset).0)
        }
    }
}
