//! A LoRA linear layer `y = x·W + s·(x·Aᵀ)·Bᵀ` (PEFT `lora.Linear.forward` without dropout) as
//! one graph node: forward 2 dispatches, backward 3 (2 when `x` needs no gradient). burn's fusion
//! cannot fuse a matmul with what follows it on WebGPU (its fused matmul needs cooperative-matrix
//! tiles unless autotune picks another, and autotune is off there), so the composed layer costs,
//! besides its 8 matmuls, a dispatch for the scaling and one for the sum in each direction. Here
//! the rank-`r` products are small kernels that fold those in:
//! - forward: the frozen product, then one pass per row computing `u = x·Aᵀ` `[n, r]` (dot
//!   products over the long dimension, split across the workgroup) and adding `s·u·Bᵀ` to the
//!   row ([`forward_kernel`]);
//! - backward: `du = s·g·B` and `dB = s·gᵀ·u` in one dispatch ([`backward_b_kernel`]: they are
//!   independent), the frozen `g·Wᵀ`, then `dAᵀ = xᵀ·du` and `dx = g·Wᵀ + du·A` in one
//!   ([`backward_a_kernel`]), one thread per output value: on WebGPU a step's cost is mostly its
//!   number of dispatches.
//!
//! Operands are read through their strides, so the transposed views (`Aᵀ`, `gᵀ`, `xᵀ`) cost no
//! copy. The frozen `W` is read as [`super::frozen`] reads it (f16 widened as it loads), and only
//! `x`, `A` and `B` get gradients. Each thread loops over one dimension of the layer (tokens or
//! features): on a device with a shader loop limit, [`fits`] says which layers may run here.
//!
//! The factors' gradients are added to a flat buffer, `dB` row-major and `dA` written transposed
//! from `dAᵀ`: in training the step's [`GradientSink`] (a [`SinkSlot`] says where, in the
//! optimizer's layout), so they need not go through autodiff; otherwise a zero buffer of the two,
//! handed to autodiff.

use burn::backend::Autodiff;
use burn::backend::Backend;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{DispatchKindConversion, DispatchTensor, TensorMetadata};
use burn::tensor::{Shape, Slice, Tensor as BurnTensor};
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;
use std::sync::{Arc, Mutex};

use super::FusedKernels;
use super::cube::{Launch, MAX_THREADS, row_grid};

mod kernels;

use kernels::{backward_a_kernel, backward_b_kernel, forward_kernel, project_add_kernel};

/// Where a product `[m, r]` goes in a flat buffer: value `(row, col)` at
/// `offset + row · row_stride + col · col_stride`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub offset: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl Placement {
    /// Row-major `[m, r]` at offset 0.
    fn rows(r: usize) -> Self {
        Placement { offset: 0, row_stride: r, col_stride: 1 }
    }

    /// Row-major `[r, m]`, the transposed product, at offset 0.
    fn columns(m: usize) -> Self {
        Placement { offset: 0, row_stride: 1, col_stride: m }
    }

    fn at(self, offset: usize) -> Self {
        Placement { offset, ..self }
    }
}

/// Where the LoRA layers of one training step add their factors' gradients: one flat f32 buffer
/// laid out as the optimizer keeps the parameters (each module's `A`, then its `B`, row-major),
/// which the optimizer then reads as it is. The gradients of 8 tensors per decoder layer would
/// otherwise be gathered into such a buffer, at most six per dispatch (WebGPU binds few buffers
/// per kernel): 42 optimizer dispatches for SmolLM2's 30 layers instead of 3. The layers' backward
/// passes add to it in place, across layers recomputed one at a time and across micro-batches.
#[derive(Clone)]
pub struct GradientSink {
    values: Arc<Mutex<Option<BurnTensor<1>>>>,
}

impl std::fmt::Debug for GradientSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GradientSink")
    }
}

impl GradientSink {
    /// A zero buffer of `len` values, outside any autodiff graph (`device` may be an autodiff one).
    pub fn zeros(len: usize, device: &burn::tensor::Device) -> Self {
        let zeros = BurnTensor::zeros([len], device);
        let zeros = if zeros.is_autodiff() { zeros.inner() } else { zeros };
        GradientSink { values: Arc::new(Mutex::new(Some(zeros))) }
    }

    /// The summed gradients, once every backward pass of the step has run.
    pub fn values(&self) -> BurnTensor<1> {
        self.lock().clone().expect("the gradient buffer is back after each update")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<BurnTensor<1>>> {
        self.values.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Replaces the buffer by `update(buffer)` (in place on the GPU).
    fn update<B: Backend>(&self, update: impl FnOnce(FloatTensor<B>) -> FloatTensor<B>)
    where
        DispatchTensor: DispatchKindConversion<B>,
    {
        let mut slot = self.lock();
        let buffer = slot.take().expect("the gradient buffer is back after each update");
        let primitive = buffer.try_into_primitive::<B>().expect("the gradient buffer lives on the layer's backend");
        *slot = Some(BurnTensor::from_primitive::<B>(update(primitive)));
    }
}

/// Where one LoRA layer's `A` and `B` gradients go in a [`GradientSink`].
#[derive(Clone, Debug)]
pub struct SinkSlot {
    pub sink: GradientSink,
    /// Offsets of `A [r, in]` and `B [out, r]` in the buffer.
    pub a_at: usize,
    pub b_at: usize,
}

/// One thread per value of `out`, 256 to a workgroup.
fn grid(values: usize) -> (CubeCount, CubeDim) {
    (row_grid(values.div_ceil(MAX_THREADS)), CubeDim::new_1d(MAX_THREADS as u32))
}

/// [`project_add_kernel`]: `dest` with `scale · lhs [m, k] · rhs [k, r]` added where `place`
/// says, in place.
pub(super) fn project_add_cube(
    dest: CubeTensor,
    lhs: CubeTensor,
    rhs: CubeTensor,
    scale: f32,
    place: Placement,
) -> CubeTensor {
    let launch = Launch::new(&lhs);
    let [m, _] = launch.dims::<2>(&lhs);
    let [_, r] = launch.dims::<2>(&rhs);
    let (count, dim) = grid(m * r);
    project_add_kernel::launch(
        &launch.client,
        count,
        dim,
        lhs.into_tensor_arg(),
        rhs.into_tensor_arg(),
        dest.clone().into_tensor_arg(),
        scale,
        place.offset as u32,
        place.row_stride as u32,
        place.col_stride as u32,
        launch.elem(),
    );
    dest
}

/// Threads of a [`forward_kernel`] workgroup (one row): a row's outputs are a few hundred to a few
/// thousand, and SwiftShader runs a wider workgroup's barriers slower.
const FORWARD_THREADS: usize = 64;

/// [`forward_kernel`]: `(y, u)`.
pub(super) fn forward_cube(
    base: CubeTensor,
    x: CubeTensor,
    at: CubeTensor,
    b: CubeTensor,
    scale: f32,
) -> (CubeTensor, CubeTensor) {
    let launch = Launch::new(&base);
    let shape = launch.dims::<2>(&base);
    let [_, rank] = launch.dims::<2>(&at);
    let (y, u) = (launch.empty(shape), launch.empty([shape[0], rank]));
    forward_kernel::launch(
        &launch.client,
        row_grid(shape[0]),
        CubeDim::new_1d(FORWARD_THREADS as u32),
        x.into_tensor_arg(),
        at.into_tensor_arg(),
        b.into_tensor_arg(),
        base.into_tensor_arg(),
        u.clone().into_tensor_arg(),
        y.clone().into_tensor_arg(),
        scale,
        rank,
        (FORWARD_THREADS / rank).max(1),
        launch.elem(),
    );
    (y, u)
}

/// [`backward_b_kernel`]: `(du, db)`, `db` written in place.
#[allow(clippy::too_many_arguments)]
pub(super) fn backward_b_cube(
    g: CubeTensor,
    gt: CubeTensor,
    b: CubeTensor,
    u: CubeTensor,
    db: CubeTensor,
    scale: f32,
    place: Placement,
) -> (CubeTensor, CubeTensor) {
    let launch = Launch::new(&g);
    let [n, out_features] = launch.dims::<2>(&g);
    let [_, r] = launch.dims::<2>(&b);
    let du = launch.empty([n, r]);
    let (count, dim) = grid((n + out_features) * r);
    backward_b_kernel::launch(
        &launch.client,
        count,
        dim,
        g.into_tensor_arg(),
        gt.into_tensor_arg(),
        b.into_tensor_arg(),
        u.into_tensor_arg(),
        du.clone().into_tensor_arg(),
        db.clone().into_tensor_arg(),
        scale,
        place.offset as u32,
        place.row_stride as u32,
        place.col_stride as u32,
        launch.elem(),
    );
    (du, db)
}

/// [`backward_a_kernel`]: `(da, dx)`, both written in place.
pub(super) fn backward_a_cube(
    xt: CubeTensor,
    du: CubeTensor,
    at: CubeTensor,
    da: CubeTensor,
    dx: CubeTensor,
    place: Placement,
) -> (CubeTensor, CubeTensor) {
    let launch = Launch::new(&du);
    let [in_features, _] = launch.dims::<2>(&xt);
    let [n, r] = launch.dims::<2>(&du);
    let (count, dim) = grid((r + n) * in_features);
    backward_a_kernel::launch(
        &launch.client,
        count,
        dim,
        xt.into_tensor_arg(),
        du.into_tensor_arg(),
        at.into_tensor_arg(),
        da.clone().into_tensor_arg(),
        dx.clone().into_tensor_arg(),
        place.offset as u32,
        place.row_stride as u32,
        place.col_stride as u32,
        r,
        launch.elem(),
    );
    (da, dx)
}

/// [`forward_cube`] in composed ops (the CPU backend's).
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(super) fn forward_composed<B: Backend>(
    base: FloatTensor<B>,
    x: FloatTensor<B>,
    at: FloatTensor<B>,
    b: FloatTensor<B>,
    scale: f32,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let u = project::<B>(x, at, 1.0);
    (add_low_rank::<B>(base, u.clone(), b, scale), u)
}

/// `scale · lhs [m, k] · rhs [k, r]` in composed ops.
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
fn project<B: Backend>(lhs: FloatTensor<B>, rhs: FloatTensor<B>, scale: f32) -> FloatTensor<B> {
    scaled::<B>(B::float_matmul(lhs, rhs), scale)
}

/// [`project_add_cube`] in composed ops (the CPU backend's), for the two placements the LoRA
/// layer uses: row-major (`dB`) and transposed (`dA` from `dAᵀ`).
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(super) fn project_add<B: Backend>(
    dest: FloatTensor<B>,
    lhs: FloatTensor<B>,
    rhs: FloatTensor<B>,
    scale: f32,
    place: Placement,
) -> FloatTensor<B> {
    let product = project::<B>(lhs, rhs, scale);
    let [m, r] = product.shape().dims::<2>();
    let laid = if place.at(0) == Placement::rows(r) {
        product
    } else {
        assert_eq!(place.at(0), Placement::columns(m), "a placement the LoRA layer does not use");
        B::float_transpose(product)
    };
    let range = [Slice::from(place.offset..place.offset + m * r)];
    let values = B::float_add(B::float_slice(dest.clone(), &range), B::float_reshape(laid, Shape::new([m * r])));
    B::float_slice_assign(dest, &range, values)
}

/// `base [m, n] + scale · p [m, r] · q [n, r]ᵀ` in composed ops.
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
fn add_low_rank<B: Backend>(base: FloatTensor<B>, p: FloatTensor<B>, q: FloatTensor<B>, scale: f32) -> FloatTensor<B> {
    B::float_add(base, scaled::<B>(B::float_matmul(p, B::float_transpose(q)), scale))
}

/// [`backward_b_cube`] in composed ops (the CPU backend's).
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
#[allow(clippy::too_many_arguments)]
pub(super) fn backward_b<B: Backend>(
    g: FloatTensor<B>,
    gt: FloatTensor<B>,
    b: FloatTensor<B>,
    u: FloatTensor<B>,
    db: FloatTensor<B>,
    scale: f32,
    place: Placement,
) -> (FloatTensor<B>, FloatTensor<B>) {
    (project::<B>(g, b, scale), project_add::<B>(db, gt, u, scale, place))
}

/// [`backward_a_cube`] in composed ops (the CPU backend's).
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(super) fn backward_a<B: Backend>(
    xt: FloatTensor<B>,
    du: FloatTensor<B>,
    at: FloatTensor<B>,
    da: FloatTensor<B>,
    dx: FloatTensor<B>,
    place: Placement,
) -> (FloatTensor<B>, FloatTensor<B>) {
    (project_add::<B>(da, xt, du.clone(), 1.0, place), add_low_rank::<B>(dx, du, at, 1.0))
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
    B::lora_forward(base, x, B::float_transpose(a), b, scale)
}

#[derive(Debug)]
struct LoraBackward;

/// What the backward pass reads: `x`, the frozen weight and its layout, `A`, `B`, `u = x·Aᵀ`,
/// the scale and where the factors' gradients go (autodiff, or a [`GradientSink`]).
type LoraState<B> =
    (FloatTensor<B>, FloatTensor<B>, bool, FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, f32, Option<SinkSlot>);

impl<B: FusedKernels> Backward<B, 3> for LoraBackward
where
    DispatchTensor: DispatchKindConversion<B>,
{
    type State = LoraState<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_a, node_b] = ops.parents;
        let g = grads.consume::<B>(&ops.node);
        let (x, weight, transposed, a, b, u, scale, slot) = ops.state;
        let ([r, in_features], out_features) = (a.shape().dims::<2>(), b.shape().dims::<2>()[0]);
        let (device, dtype) = (g.device(), g.dtype());
        let mut dx = None;
        // Two dispatches around the frozen product: `du = s·g·B` with `dB = s·gᵀ·u` `[out, r]`,
        // then `dAᵀ = xᵀ·du` `[in, r]` (placed as dA `[r, in]`) with `dx = g·Wᵀ + du·A`.
        let add_factor_gradients = |buffer: FloatTensor<B>, b_at: usize, a_at: usize| {
            let gt = B::float_transpose(g.clone());
            let (du, buffer) = B::lora_backward_b(g.clone(), gt, b, u, buffer, scale, Placement::rows(r).at(b_at));
            let (xt, a_place) = (B::float_transpose(x), Placement::columns(in_features).at(a_at));
            if node_x.is_none() {
                return B::lora_project_add(buffer, xt, du, 1.0, a_place);
            }
            // W `[in, out]`: the stored weight read the other way round.
            let dx_base = B::frozen_matmul_forward(g, weight, !transposed);
            let (buffer, dx_full) = B::lora_backward_a(xt, du, B::float_transpose(a), buffer, dx_base, a_place);
            dx = Some(dx_full);
            buffer
        };
        if let Some(SinkSlot { sink, a_at, b_at }) = slot {
            sink.update::<B>(|buffer| add_factor_gradients(buffer, b_at, a_at));
        } else {
            // For autodiff: dB then dA, end to end in one buffer.
            let b_values = out_features * r;
            let len = b_values + r * in_features;
            let zeros = B::float_zeros(Shape::new([len]), &device, dtype.into());
            let buffer = add_factor_gradients(zeros, 0, b_values);
            let part = |range: std::ops::Range<usize>, shape: [usize; 2]| {
                B::float_reshape(B::float_slice(buffer.clone(), &[Slice::from(range)]), Shape::new(shape))
            };
            if let Some(node) = node_b {
                grads.register::<B>(node.id, part(0..b_values, [out_features, r]));
            }
            if let Some(node) = node_a {
                grads.register::<B>(node.id, part(b_values..len, [r, in_features]));
            }
        }
        if let (Some(node), Some(dx)) = (node_x, dx) {
            grads.register::<B>(node.id, dx);
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn autodiff<B: FusedKernels, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
    transposed: bool,
    a: FloatTensor<Autodiff<B, C>>,
    b: FloatTensor<Autodiff<B, C>>,
    scale: f32,
    slot: Option<SinkSlot>,
) -> FloatTensor<Autodiff<B, C>>
where
    DispatchTensor: DispatchKindConversion<B>,
{
    match LoraBackward.prepare::<C>([x.node(), a.node(), b.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let [x, weight, a, b] = [x, weight, a, b].map(|t| t.into_primitive());
            let (y, u) = forward::<B>(x.clone(), weight.clone(), transposed, a.clone(), b.clone(), scale);
            prep.finish((x, weight, transposed, a, b, u, scale, slot), y)
        }
        OpsKind::UnTracked(prep) => {
            let [x, weight, a, b] = [x, weight, a, b].map(|t| t.into_primitive());
            prep.finish(plain::<B>(x, weight, transposed, a, b, scale))
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
