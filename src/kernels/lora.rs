//! A LoRA linear layer `y = x·W + s·(x·Aᵀ)·Bᵀ` (PEFT `lora.Linear.forward` without dropout) as
//! one graph node: forward 3 dispatches, backward 5 (3 when `x` needs no gradient). burn's fusion
//! cannot fuse a matmul with what follows it on WebGPU (its fused matmul needs cooperative-matrix
//! tiles unless autotune picks another, and autotune is off there), so the composed layer costs,
//! besides its 8 matmuls, a dispatch for the scaling and one for the sum in each direction. Here
//! the rank-`r` products are small kernels that fold those in:
//! - `u = x·Aᵀ` `[n, r]` and, backward, `du = s·g·B`, `dB = s·gᵀ·u`, `dAᵀ = xᵀ·du`: one thread per
//!   output value, a dot product over the long dimension ([`project_kernel`]);
//! - `y = x·W + s·u·Bᵀ` and `dx = g·Wᵀ + du·A`: the frozen product, then one pass adding the
//!   rank-`r` term to it ([`add_low_rank_kernel`]).
//!
//! Operands are read through their strides, so the transposed views (`Aᵀ`, `gᵀ`, `xᵀ`) cost no
//! copy. The frozen `W` is read as [`super::frozen`] reads it (f16 widened as it loads), and only
//! `x`, `A` and `B` get gradients. Each thread loops over one dimension of the layer (tokens or
//! features): on a device with a shader loop limit, [`fits`] says which layers may run here.

use burn::backend::Autodiff;
use burn::backend::Backend;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use super::FusedKernels;
use super::cube::{Launch, MAX_THREADS, row_grid};

/// `out [m, r] = scale · lhs [m, k] · rhs [k, r]`, one thread per output value.
#[cube(launch)]
fn project_kernel<F: Float>(
    lhs: &Tensor<F>,
    rhs: &Tensor<F>,
    out: &mut Tensor<F>,
    scale: f32,
    #[define(F)] _dtype: ElemType,
) {
    let i =
        (CUBE_POS_Y as usize * CUBE_COUNT_X as usize + CUBE_POS_X as usize) * CUBE_DIM_X as usize + UNIT_POS as usize;
    if i < out.len() {
        let r = out.shape(1);
        let (row, col) = (i / r, i % r);
        let mut sum = F::new(0.0);
        let mut lhs_at = row * lhs.stride(0);
        let mut rhs_at = col * rhs.stride(1);
        for _ in 0..lhs.shape(1) {
            sum += lhs[lhs_at] * rhs[rhs_at];
            lhs_at += lhs.stride(1);
            rhs_at += rhs.stride(0);
        }
        out[i] = sum * F::cast_from(scale);
    }
}

/// `out [m, n] = base [m, n] + scale · p [m, r] · q [n, r]ᵀ`, one thread per output value.
#[cube(launch)]
fn add_low_rank_kernel<F: Float>(
    base: &Tensor<F>,
    p: &Tensor<F>,
    q: &Tensor<F>,
    out: &mut Tensor<F>,
    scale: f32,
    #[comptime] rank: usize,
    #[define(F)] _dtype: ElemType,
) {
    let i =
        (CUBE_POS_Y as usize * CUBE_COUNT_X as usize + CUBE_POS_X as usize) * CUBE_DIM_X as usize + UNIT_POS as usize;
    if i < out.len() {
        let n = out.shape(1);
        let (row, col) = (i / n, i % n);
        let (p_at, q_at) = (row * p.stride(0), col * q.stride(0));
        let (p_step, q_step) = (p.stride(1), q.stride(1));
        let mut sum = F::new(0.0);
        #[unroll]
        for k in 0..rank {
            sum += p[p_at + k * p_step] * q[q_at + k * q_step];
        }
        out[i] = base[row * base.stride(0) + col * base.stride(1)] + sum * F::cast_from(scale);
    }
}

/// One thread per value of `out`, 256 to a workgroup.
fn grid(values: usize) -> (CubeCount, CubeDim) {
    (row_grid(values.div_ceil(MAX_THREADS)), CubeDim::new_1d(MAX_THREADS as u32))
}

pub(super) fn project_cube(lhs: CubeTensor, rhs: CubeTensor, scale: f32) -> CubeTensor {
    let launch = Launch::new(&lhs);
    let [m, _] = launch.dims::<2>(&lhs);
    let [_, r] = launch.dims::<2>(&rhs);
    let out = launch.empty([m, r]);
    let (count, dim) = grid(m * r);
    project_kernel::launch(
        &launch.client,
        count,
        dim,
        lhs.into_tensor_arg(),
        rhs.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        scale,
        launch.elem(),
    );
    out
}

pub(super) fn add_low_rank_cube(base: CubeTensor, p: CubeTensor, q: CubeTensor, scale: f32) -> CubeTensor {
    let launch = Launch::new(&base);
    let shape = launch.dims::<2>(&base);
    let [_, rank] = launch.dims::<2>(&p);
    let out = launch.empty(shape);
    let (count, dim) = grid(shape[0] * shape[1]);
    add_low_rank_kernel::launch(
        &launch.client,
        count,
        dim,
        base.into_tensor_arg(),
        p.into_tensor_arg(),
        q.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        scale,
        rank,
        launch.elem(),
    );
    out
}

/// [`project_cube`] in composed ops (the CPU backend's).
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(super) fn project<B: Backend>(lhs: FloatTensor<B>, rhs: FloatTensor<B>, scale: f32) -> FloatTensor<B> {
    scaled::<B>(B::float_matmul(lhs, rhs), scale)
}

/// [`add_low_rank_cube`] in composed ops (the CPU backend's).
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(super) fn add_low_rank<B: Backend>(
    base: FloatTensor<B>,
    p: FloatTensor<B>,
    q: FloatTensor<B>,
    scale: f32,
) -> FloatTensor<B> {
    B::float_add(base, scaled::<B>(B::float_matmul(p, B::float_transpose(q)), scale))
}

#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
fn scaled<B: Backend>(x: FloatTensor<B>, scale: f32) -> FloatTensor<B> {
    if scale == 1.0 { x } else { B::float_mul_scalar(x, scale.into()) }
}

/// Whether a layer of `features` inputs and outputs over `tokens` rows keeps every thread's loop
/// within the device's shader loop `limit` (an eighth in reserve, as `attention::fits`).
pub fn fits(tokens: usize, features: usize, limit: Option<u64>) -> bool {
    limit.is_none_or(|limit| (tokens.max(features) as u64) <= limit - limit / 8)
}

/// The forward pass: `(y, u)`.
fn forward<B: FusedKernels>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    transposed: bool,
    a: FloatTensor<B>,
    b: FloatTensor<B>,
    scale: f32,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let base = B::frozen_matmul_forward(x.clone(), weight, transposed);
    let u = B::lora_project(x, B::float_transpose(a), 1.0);
    (B::lora_add_low_rank(base, u.clone(), b, scale), u)
}

#[derive(Debug)]
struct LoraBackward;

/// What the backward pass reads: `x`, the frozen weight and its layout, `A`, `B`, `u = x·Aᵀ`
/// and the scale.
type LoraState<B> = (FloatTensor<B>, FloatTensor<B>, bool, FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, f32);

impl<B: FusedKernels> Backward<B, 3> for LoraBackward {
    type State = LoraState<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_a, node_b] = ops.parents;
        let g = grads.consume::<B>(&ops.node);
        let (x, weight, transposed, a, b, u, scale) = ops.state;
        if let Some(node) = node_b {
            grads.register::<B>(node.id, B::lora_project(B::float_transpose(g.clone()), u, scale));
        }
        if node_a.is_none() && node_x.is_none() {
            return;
        }
        let du = B::lora_project(g.clone(), b, scale);
        if let Some(node) = node_a {
            let da_t = B::lora_project(B::float_transpose(x), du.clone(), 1.0);
            grads.register::<B>(node.id, B::float_transpose(da_t));
        }
        if let Some(node) = node_x {
            // dx = g·Wᵀ + du·A, with W `[in, out]`: the stored weight read the other way round.
            let dx_base = B::frozen_matmul_forward(g, weight, !transposed);
            grads.register::<B>(node.id, B::lora_add_low_rank(dx_base, du, B::float_transpose(a), 1.0));
        }
    }
}

pub(super) fn autodiff<B: FusedKernels, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
    transposed: bool,
    a: FloatTensor<Autodiff<B, C>>,
    b: FloatTensor<Autodiff<B, C>>,
    scale: f32,
) -> FloatTensor<Autodiff<B, C>> {
    match LoraBackward.prepare::<C>([x.node(), a.node(), b.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let [x, weight, a, b] = [x, weight, a, b].map(|t| t.into_primitive());
            let (y, u) = forward::<B>(x.clone(), weight.clone(), transposed, a.clone(), b.clone(), scale);
            prep.finish((x, weight, transposed, a, b, u, scale), y)
        }
        OpsKind::UnTracked(prep) => {
            let [x, weight, a, b] = [x, weight, a, b].map(|t| t.into_primitive());
            prep.finish(forward::<B>(x, weight, transposed, a, b, scale).0)
        }
    }
}

/// The layer on a backend without autodiff (evaluation, generation).
pub(super) fn plain<B: FusedKernels>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    transposed: bool,
    a: FloatTensor<B>,
    b: FloatTensor<B>,
    scale: f32,
) -> FloatTensor<B> {
    forward::<B>(x, weight, transposed, a, b, scale).0
}
