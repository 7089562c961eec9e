//! Causal self-attention without the score matrix (flash-attention style): the forward pass and
//! each half of the backward pass are one kernel, streaming keys (or queries) through workgroup
//! memory with an online softmax. Grouped-query heads, a sliding window, a key padding mask and
//! RoPE on q and k are applied inside the kernels.
//!
//! Layout: q `[batch, len, heads, d]`, k and v `[batch, len, kv_heads, d]` (token-major, as the
//! projections produce them: no head transpose), the output like q. Query `i` sees key `j` iff
//! `j ≤ i`, `i − j < window` and `j` is not padding. A query that sees no key at all gets what
//! transformers' additive `finfo.min` mask gives it, the uniform softmax over all keys (the mean
//! of v), and passes no gradient to q or k.
//!
//! One thread per query row (forward, dq) or key row (dk, dv); a workgroup of 64 rows shares
//! tiles of the other side in workgroup memory (at most 16,000 bytes). Rows are private arrays of
//! `d` values, so `d` is a kernel constant; every array is written before it is read (a driver
//! that runs many workgroups on one thread, as lavapipe does, may leave the last one's values).
//!
//! Packed buffers (each kernel writes one output, so that no kernel binds more than 7 storage
//! buffers): the forward output is `[out | lse]`, the query-side backward `[dq | δ | lse]` with
//! `δ_i = Σ dout_i · out_i`, the key-side backward `[dk | dv]`; the tails after `out` and `dq` are
//! padded ([`aligned`]) so that those two are views of their buffers, not copies.
//! `lse [batch, heads, len]` is the log-sum-exp of each query's scaled scores, [`MASKED_ROW`] for
//! a query that sees no key.
//!
//! Mesa's llvmpipe (lavapipe, the Vulkan device of the native tests and benchmarks) stops every
//! loop of a shader invocation once the invocation has run 65,535 loop iterations in all
//! (`LP_MAX_TGSI_LOOP_ITERATIONS`, one counter shared by all its loops) and skips the rest,
//! output writes included. Here each query (forward, dq) or key (dk, dv, per query head of its
//! group) costs about `2·d` iterations per row of the other side it visits, so the last
//! workgroup of a long sequence is cut short: measured, `d` 64 passes at 481 keys and leaves its
//! outputs unwritten at 482; `d` 128 between 230 and 250; the key side with two query heads per
//! kv head fails at 256 keys. The arithmetic is right there too: with the loops over `d`
//! unrolled (which llvmpipe does not count, but then takes minutes to compile) those cases agree
//! with the CPU within 1e-6. So the model asks [`fits`] with the device's loop limit and runs
//! eager attention where a shape would exceed it.
//!
//! The shared `aux` buffer holds the RoPE tables and the key mask of one forward pass:
//! `[cos (len·d) | sin (len·d) | mask (batch·len)]` with RoPE, `[mask]` without.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, TensorMetadata};
use burn::tensor::activation::softmax;
use burn::tensor::{Tensor as BurnTensor, TensorData};
use burn_cubecl::CubeBackend;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use super::FusedKernels;
use super::cube::{Launch, MAX_GRID, aligned};

mod kernels;

use kernels::{backward_key_kernel, backward_query_kernel, forward_kernel};

/// `lse` of a query that sees no key.
pub const MASKED_ROW: f32 = 3.0e38;
/// Below every real score (WGSL has no infinity literals).
const NEG: f32 = -3.0e38;
/// Rows per workgroup.
const ROWS: usize = 64;
/// Workgroup memory for tiles, in f32 values (16,000 bytes, under WebGPU's 16 KiB).
const TILE_FLOATS: usize = 4000;

/// Static facts about one attention call, shared by its kernels and the CPU path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AttentionShape {
    pub batch: usize,
    pub len: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub d: usize,
}

impl AttentionShape {
    fn of(q: &impl TensorMetadata, k: &impl TensorMetadata) -> Self {
        let [batch, len, heads, d] = q.shape().dims::<4>();
        AttentionShape { batch, len, heads, kv_heads: k.shape()[2], d }
    }

    fn q_size(&self) -> usize {
        self.batch * self.len * self.heads * self.d
    }

    fn kv_size(&self) -> usize {
        self.batch * self.len * self.kv_heads * self.d
    }

    fn rows(&self) -> usize {
        self.batch * self.heads * self.len
    }

    /// An upper estimate of the loop iterations one invocation runs: the key side's (each key
    /// visits every query of each query head of its group), per visited tile a tile load, the
    /// rescale over `d` and two passes over the tile's rows, per visible row `2·d`, and a few
    /// loops over `d` outside. It undercounts llvmpipe's measured threshold by about 2 %
    /// (64,570 at `d` 64 and 482 keys), hence the margin in [`fits`].
    fn loop_iterations(&self) -> u64 {
        let (len, d) = (self.len as u64, self.d as u64);
        let tile = tile_for(self.d) as u64;
        let tiles = len.div_ceil(tile);
        let per_head = tiles * ((tile * d).div_ceil(ROWS as u64) + d + 2 * tile) + len * 2 * d;
        (self.heads / self.kv_heads) as u64 * per_head + 4 * d
    }
}

/// Whether the kernels run `shape` correctly on a device that ends an invocation's loops after
/// `loop_limit` iterations (`GpuInfo::shader_loop_limit`; `None`: no such limit). Keeps an eighth
/// of the limit in reserve for [`AttentionShape::loop_iterations`]' undercount.
pub fn fits(shape: &AttentionShape, loop_limit: Option<u64>) -> bool {
    loop_limit.is_none_or(|limit| shape.loop_iterations() <= limit - limit / 8)
}

/// Keys (or queries) per tile: two tiles of `tile × d` values (plus two per row) fit in
/// [`TILE_FLOATS`].
fn tile_for(d: usize) -> usize {
    (TILE_FLOATS / (2 * d + 2)).max(1)
}

fn grid(rows: usize, groups: usize) -> CubeCount {
    assert!(groups <= MAX_GRID, "{groups} (batch × heads) attention workgroup rows exceed {MAX_GRID}");
    CubeCount::Static(rows.div_ceil(ROWS) as u32, groups as u32, 1)
}

/// `[out | lse]`, see the module documentation.
pub(super) fn forward_cube(
    q: CubeTensor,
    k: CubeTensor,
    v: CubeTensor,
    aux: CubeTensor,
    scale: f32,
    window: u32,
    rope: bool,
) -> CubeTensor {
    let launch = Launch::new(&q);
    let [q, k, v, aux] = [q, k, v, aux].map(|t| launch.contiguous(t));
    let shape = AttentionShape::of(&q, &k);
    let out = launch.empty([shape.q_size() + aligned(shape.rows())]);
    forward_kernel::launch(
        &launch.client,
        grid(shape.len, shape.batch * shape.heads),
        CubeDim::new_1d(ROWS as u32),
        q.into_tensor_arg(),
        k.into_tensor_arg(),
        v.into_tensor_arg(),
        aux.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        scale,
        window,
        shape.d,
        tile_for(shape.d),
        rope,
        launch.elem(),
    );
    out
}

/// `(dq, dk, dv)`, flat, in the layouts of q, k and v.
#[allow(clippy::too_many_arguments)]
pub(super) fn backward_cube(
    q: CubeTensor,
    k: CubeTensor,
    v: CubeTensor,
    aux: CubeTensor,
    saved: CubeTensor,
    dout: CubeTensor,
    scale: f32,
    window: u32,
    rope: bool,
) -> (CubeTensor, CubeTensor) {
    let launch = Launch::new(&q);
    let [q, k, v, aux, saved, dout] = [q, k, v, aux, saved, dout].map(|t| launch.contiguous(t));
    let shape = AttentionShape::of(&q, &k);
    // `[dq | the rows' two sums]`, the tail padded so that dq is a view.
    let query_side = launch.empty([shape.q_size() + aligned(2 * shape.rows())]);
    backward_query_kernel::launch(
        &launch.client,
        grid(shape.len, shape.batch * shape.heads),
        CubeDim::new_1d(ROWS as u32),
        q.clone().into_tensor_arg(),
        k.clone().into_tensor_arg(),
        v.clone().into_tensor_arg(),
        aux.clone().into_tensor_arg(),
        saved.into_tensor_arg(),
        dout.clone().into_tensor_arg(),
        query_side.clone().into_tensor_arg(),
        scale,
        window,
        shape.d,
        tile_for(shape.d),
        rope,
        launch.elem(),
    );
    let key_side = launch.empty([2 * shape.kv_size()]);
    backward_key_kernel::launch(
        &launch.client,
        grid(shape.len, shape.batch * shape.kv_heads),
        CubeDim::new_1d(ROWS as u32),
        q.into_tensor_arg(),
        k.into_tensor_arg(),
        v.into_tensor_arg(),
        aux.into_tensor_arg(),
        dout.into_tensor_arg(),
        query_side.clone().into_tensor_arg(),
        key_side.clone().into_tensor_arg(),
        scale,
        window,
        shape.d,
        tile_for(shape.d),
        rope,
        launch.elem(),
    );
    (query_side, key_side)
}

/// Views into a flat primitive: `flat[start..start + size]` reshaped to `shape`.
fn view<B: burn::backend::Backend, const D: usize>(
    flat: FloatTensor<B>,
    start: usize,
    shape: [usize; D],
) -> FloatTensor<B> {
    let size = shape.iter().product::<usize>();
    let part = B::float_slice(flat, &[burn::tensor::Slice::from(start..start + size)]);
    B::float_reshape(part, shape.into())
}

/// The CubeCL backward: the packed kernel outputs cut into `(dq, dk, dv)`.
#[allow(clippy::too_many_arguments)]
pub(super) fn backward_cube_split(
    q: CubeTensor,
    k: CubeTensor,
    v: CubeTensor,
    aux: CubeTensor,
    saved: CubeTensor,
    dout: CubeTensor,
    scale: f32,
    window: u32,
    rope: bool,
) -> (CubeTensor, CubeTensor, CubeTensor) {
    let shape = AttentionShape::of(&q, &k);
    let (query_side, key_side) = backward_cube(q, k, v, aux, saved, dout, scale, window, rope);
    let q_dims = [shape.batch, shape.len, shape.heads, shape.d];
    let kv_dims = [shape.batch, shape.len, shape.kv_heads, shape.d];
    (
        view::<CubeBackend, 4>(query_side, 0, q_dims),
        view::<CubeBackend, 4>(key_side.clone(), 0, kv_dims),
        view::<CubeBackend, 4>(key_side, shape.kv_size(), kv_dims),
    )
}

/// Attention in composed tensor ops, as transformers' eager attention computes it: scores with an
/// additive `f32::MIN` mask, softmax, then the values. A query that sees no key has its scores
/// detached, so that it passes no gradient to q and k. Differentiable; `[out, lse]` flat.
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(super) fn composed(
    q: BurnTensor<4>,
    k: BurnTensor<4>,
    v: BurnTensor<4>,
    aux: BurnTensor<1>,
    scale: f32,
    window: u32,
    rope: bool,
) -> (BurnTensor<4>, BurnTensor<3>) {
    let [batch, len, heads, d] = q.dims();
    let kv_heads = k.dims()[2];
    let device = q.device();
    let aux_values: Vec<f32> = aux.clone().into_data().try_to_vec::<f32>().expect("f32 aux");
    let mut mask_at = 0usize;
    if rope {
        mask_at = 2 * len * d;
    }
    let mask = &aux_values[mask_at..mask_at + batch * len];
    let window = if window == 0 { len } else { window as usize };
    let (mut bias, mut seen) = (Vec::with_capacity(batch * len * len), Vec::with_capacity(batch * len));
    for b in 0..batch {
        for i in 0..len {
            let mut any = false;
            for j in 0..len {
                let ok = j <= i && i - j < window && mask[b * len + j] > 0.5;
                any |= ok;
                bias.push(if ok { 0.0 } else { f32::MIN });
            }
            seen.push(if any { 1.0f32 } else { 0.0 });
        }
    }
    let bias = BurnTensor::<4>::from_data(TensorData::new(bias, [batch, 1, len, len]), &device);
    let seen = BurnTensor::<4>::from_data(TensorData::new(seen, [batch, 1, len, 1]), &device);
    let heads_first = |x: BurnTensor<4>| x.swap_dims(1, 2);
    let (mut q, mut k, v) = (heads_first(q), heads_first(k), heads_first(v));
    if rope {
        let table = |at: usize| {
            BurnTensor::<1>::from_data(TensorData::new(aux_values[at..at + len * d].to_vec(), [len * d]), &device)
                .reshape([1, 1, len, d])
        };
        let (cos, sin) = (table(0), table(len * d));
        let rotate = |x: BurnTensor<4>| {
            let first = x.clone().narrow(3, 0, d / 2);
            let second = x.clone().narrow(3, d / 2, d / 2);
            x * cos.clone() + BurnTensor::cat(vec![second.neg(), first], 3) * sin.clone()
        };
        q = rotate(q);
        k = rotate(k);
    }
    let repeat = |x: BurnTensor<4>| {
        let groups = heads / kv_heads;
        x.unsqueeze_dim::<5>(2).expand([batch, kv_heads, groups, len, d]).reshape([batch, heads, len, d])
    };
    let scores = q.matmul(repeat(k).swap_dims(2, 3)) * scale as f64;
    // Detached scores for queries that see nothing: their softmax is uniform whatever q and k are.
    let scores = scores.clone() * seen.clone() + scores.detach() * (seen.clone().neg() + 1.0) + bias;
    let lse = scores.clone().exp().sum_dim(3).log();
    let lse = lse.clone() * seen.clone() + (seen.neg() + 1.0) * MASKED_ROW as f64;
    let out = softmax(scores, 3).matmul(repeat(v)).swap_dims(1, 2);
    (out, lse.reshape([batch, heads, len]))
}

#[derive(Debug)]
struct AttentionBackward;

/// `q, k, v, aux, [out | lse]` and `scale, window, rope`.
type AttentionState<B> =
    (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, (f32, u32, bool));

impl<B: FusedKernels> Backward<B, 3> for AttentionBackward {
    type State = AttentionState<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_q, node_k, node_v] = ops.parents;
        let dout = grads.consume::<B>(&ops.node);
        let (q, k, v, aux, saved, (scale, window, rope)) = ops.state;
        let (dq, dk, dv) = B::attention_backward(q, k, v, aux, saved, dout, scale, window, rope);
        for (node, grad) in [(node_q, dq), (node_k, dk), (node_v, dv)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

/// The output `[batch, len, heads, d]` of a packed forward result.
pub(super) fn output<B: burn::backend::Backend>(saved: FloatTensor<B>, q_shape: [usize; 4]) -> FloatTensor<B> {
    view::<B, 4>(saved, 0, q_shape)
}

pub(super) fn autodiff<B: FusedKernels, C: CheckpointStrategy>(
    q: FloatTensor<Autodiff<B, C>>,
    k: FloatTensor<Autodiff<B, C>>,
    v: FloatTensor<Autodiff<B, C>>,
    aux: FloatTensor<Autodiff<B, C>>,
    scale: f32,
    window: u32,
    rope: bool,
) -> FloatTensor<Autodiff<B, C>> {
    let q_shape = q.shape().dims::<4>();
    let aux = aux.into_primitive();
    match AttentionBackward.prepare::<C>([q.node(), k.node(), v.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let (q, k, v) = (q.into_primitive(), k.into_primitive(), v.into_primitive());
            let saved = B::attention_forward(q.clone(), k.clone(), v.clone(), aux.clone(), scale, window, rope);
            let out = output::<B>(saved.clone(), q_shape);
            prep.finish((q, k, v, aux, saved, (scale, window, rope)), out)
        }
        OpsKind::UnTracked(prep) => {
            let saved = B::attention_forward(
                q.into_primitive(),
                k.into_primitive(),
                v.into_primitive(),
                aux,
                scale,
                window,
                rope,
            );
            prep.finish(output::<B>(saved, q_shape))
        }
    }
}
