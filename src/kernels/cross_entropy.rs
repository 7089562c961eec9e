//! Cross-entropy over a large vocabulary in chunks: the LM-head product and the log-softmax are
//! computed a chunk of vocabulary rows at a time, so that no `[tokens, vocab]` tensor exists
//! (Gemma 3's vocabulary is 262,144). Per chunk: one matmul and one kernel that folds the chunk
//! into each row's running max, sum of exponentials and target logit (an online log-sum-exp).
//! The backward pass recomputes each chunk's logits and turns them into `softmax − onehot` in one
//! elementwise kernel, then multiplies back through the head.
//!
//! Targets travel as f32 (exact for ids below 2²⁴).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, TensorMetadata};
use burn::tensor::{IndexingUpdateOp, Slice, Tensor as BurnTensor};
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use super::FusedKernels;
use super::cube::{Launch, MAX_THREADS, grid_row, grid_thread, row_grid, workgroup_max, workgroup_sum};

/// Logits per chunk: 4 M values (16 MiB). Each chunk's product is still large enough to keep a
/// GPU busy, and what the loss holds at once (a chunk's logits, their gradient, an f16 head's
/// chunk cast to f32) stays below one decoder layer's activations at the usual batch sizes.
pub const CHUNK_VALUES: usize = 1 << 22;

/// Up to this many logits (256 MiB) are kept from the forward pass for the backward pass instead
/// of being recomputed: no more memory than the unchunked loss held, a third fewer head FLOPs.
pub const KEEP_VALUES: usize = 1 << 26;

/// How the loss over `rows` rows of a `vocab`-id head is cut: vocabulary ids per chunk (about
/// [`CHUNK_VALUES`] logits, and no more than `max_values`, what one binding holds) and whether
/// the logits are kept for the backward pass (at most [`KEEP_VALUES`] in all) or recomputed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LossChunks {
    pub chunk: usize,
    pub keep_logits: bool,
}

impl LossChunks {
    pub fn of(rows: usize, vocab: usize, max_values: usize) -> Self {
        let keep_logits = rows.saturating_mul(vocab) <= KEEP_VALUES;
        let rows = rows.max(1);
        let chunk = (CHUNK_VALUES / rows).max(1024).min(vocab).min(max_values / rows).max(1);
        LossChunks { chunk, keep_logits }
    }
}

#[cube(launch)]
fn chunk_forward_kernel<F: Float>(
    logits: &Tensor<F>,
    targets: &Tensor<F>,
    state: &Tensor<F>,
    out: &mut Tensor<F>,
    start: u32,
    #[comptime] first: bool,
    #[comptime] threads: usize,
    #[define(F)] _dtype: ElemType,
) {
    let rows = logits.shape(0);
    let width = logits.shape(1);
    let row = grid_row();
    if row >= rows {
        terminate!();
    }
    let unit = UNIT_POS as usize;
    let base = row * width;
    let mut partial = Shared::<[F]>::new_slice(threads);
    let mut local = F::new(-3.0e38);
    let mut j = unit;
    while j < width {
        local = F::max(local, logits[base + j]);
        j += threads;
    }
    partial[unit] = local;
    workgroup_max::<F>(&mut partial, threads);
    let chunk_max = partial[0];
    sync_cube();
    let mut sum = F::new(0.0);
    let mut j = unit;
    while j < width {
        sum += F::exp(logits[base + j] - chunk_max);
        j += threads;
    }
    partial[unit] = sum;
    workgroup_sum::<F>(&mut partial, threads);
    if unit == 0 {
        let chunk_sum = partial[0];
        let local_target = targets[row] - F::cast_from(start);
        let mut target_logit = F::new(0.0);
        if local_target >= F::new(0.0) && local_target < F::cast_from(width) {
            target_logit = logits[base + u32::cast_from(local_target) as usize];
        }
        if first {
            out[row * 3] = chunk_max;
            out[row * 3 + 1] = chunk_sum;
            out[row * 3 + 2] = target_logit;
        } else {
            let m = state[row * 3];
            let m_new = F::max(m, chunk_max);
            out[row * 3] = m_new;
            out[row * 3 + 1] = state[row * 3 + 1] * F::exp(m - m_new) + chunk_sum * F::exp(chunk_max - m_new);
            out[row * 3 + 2] = state[row * 3 + 2] + target_logit;
        }
    }
}

#[cube(launch)]
fn chunk_backward_kernel<F: Float>(
    logits: &Tensor<F>,
    targets: &Tensor<F>,
    lse: &Tensor<F>,
    upstream: &Tensor<F>,
    out: &mut Tensor<F>,
    start: u32,
    #[define(F)] _dtype: ElemType,
) {
    let width = logits.shape(1);
    let i = grid_thread();
    if i < logits.len() {
        let row = i / width;
        let column = i % width;
        let mut grad = F::exp(logits[i] - lse[row]);
        if F::cast_from(start as usize + column) == targets[row] {
            grad -= F::new(1.0);
        }
        out[i] = grad * upstream[row % upstream.len()];
    }
}

pub(super) fn chunk_forward_cube(
    logits: CubeTensor,
    targets: CubeTensor,
    state: CubeTensor,
    start: u32,
    first: bool,
) -> CubeTensor {
    let launch = Launch::new(&logits);
    let [logits, targets, state] = [logits, targets, state].map(|t| launch.contiguous(t));
    let [rows, _] = launch.dims::<2>(&logits);
    let out = launch.empty([rows, 3]);
    chunk_forward_kernel::launch(
        &launch.client,
        row_grid(rows),
        CubeDim::new_1d(MAX_THREADS as u32),
        logits.into_tensor_arg(),
        targets.into_tensor_arg(),
        state.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        start,
        first,
        MAX_THREADS,
        launch.elem(),
    );
    out
}

pub(super) fn chunk_backward_cube(
    logits: CubeTensor,
    targets: CubeTensor,
    lse: CubeTensor,
    upstream: CubeTensor,
    start: u32,
) -> CubeTensor {
    let launch = Launch::new(&logits);
    let [logits, targets, lse, upstream] = [logits, targets, lse, upstream].map(|t| launch.contiguous(t));
    let shape = launch.dims::<2>(&logits);
    let out = launch.empty(shape);
    chunk_backward_kernel::launch(
        &launch.client,
        row_grid((shape[0] * shape[1]).div_ceil(MAX_THREADS)),
        CubeDim::new_1d(MAX_THREADS as u32),
        logits.into_tensor_arg(),
        targets.into_tensor_arg(),
        lse.into_tensor_arg(),
        upstream.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        start,
        launch.elem(),
    );
    out
}

/// The same chunk update in composed tensor ops (the CPU backend's implementation).
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(super) fn chunk_forward_composed(
    logits: BurnTensor<2>,
    targets: BurnTensor<1>,
    state: BurnTensor<2>,
    start: u32,
    first: bool,
) -> BurnTensor<2> {
    let [rows, width] = logits.dims();
    let chunk_max = logits.clone().max_dim(1);
    let chunk_sum = (logits.clone() - chunk_max.clone()).exp().sum_dim(1);
    let local = targets.reshape([rows, 1]) - start as f64;
    let inside = local.clone().greater_equal_elem(0.0).bool_and(local.clone().lower_elem(width as f64));
    let index = local.clamp(0.0, (width - 1) as f64).int();
    let target_logit = logits.gather(1, index).mask_fill(inside.bool_not(), 0.0);
    if first {
        return BurnTensor::cat(vec![chunk_max, chunk_sum, target_logit], 1);
    }
    let m = state.clone().narrow(1, 0, 1);
    let m_new = m.clone().max_pair(chunk_max.clone());
    let sum = state.clone().narrow(1, 1, 1) * (m - m_new.clone()).exp() + chunk_sum * (chunk_max - m_new.clone()).exp();
    BurnTensor::cat(vec![m_new, sum, state.narrow(1, 2, 1) + target_logit], 1)
}

#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(super) fn chunk_backward_composed(
    logits: BurnTensor<2>,
    targets: BurnTensor<1>,
    lse: BurnTensor<1>,
    upstream: BurnTensor<1>,
    start: u32,
) -> BurnTensor<2> {
    let [rows, width] = logits.dims();
    let local = targets.reshape([rows, 1]) - start as f64;
    let inside = local.clone().greater_equal_elem(0.0).bool_and(local.clone().lower_elem(width as f64));
    let index = local.clamp(0.0, (width - 1) as f64).int();
    let upstream = upstream.clone().reshape([upstream.dims()[0], 1]);
    // softmax · g everywhere, then −g at each row's target (when it is in this chunk).
    let minus_g = inside.float().neg() * upstream.clone();
    ((logits - lse.reshape([rows, 1])).exp() * upstream).scatter(1, index, minus_g, IndexingUpdateOp::Add)
}

/// Vocabulary rows `start..start + size` of the head, at its stored width (a view).
fn chunk_weight<B: Backend>(head: &FloatTensor<B>, start: usize, size: usize) -> FloatTensor<B> {
    B::float_slice(head.clone(), &[Slice::from(start..start + size)])
}

/// The head's chunk (as [`chunk_weight`]) and the logits of `hidden` against it. The product
/// reads an f16 head as it is ([`FusedKernels::frozen_matmul_forward`]): a chunk cast to f32
/// first would be a copy of up to the whole head (113 MiB at SmolLM2-135M's 49,152 × 576 for a
/// few rows), which a recorded step (`train::graph`) would keep.
fn chunk_logits<B: FusedKernels>(
    hidden: &FloatTensor<B>,
    head: &FloatTensor<B>,
    start: usize,
    size: usize,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let weight = chunk_weight::<B>(head, start, size);
    let logits = B::frozen_matmul_forward(hidden.clone(), weight.clone(), true);
    (weight, logits)
}

fn chunks(vocab: usize, chunk: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..vocab).step_by(chunk.max(1)).map(move |start| (start, chunk.min(vocab - start)))
}

/// The loss: summed `[1]`, or per row `[rows]` when `per_row`; each row's log-sum-exp `[rows]`;
/// each chunk's logits when `keep`.
pub(super) fn forward<B: FusedKernels>(
    hidden: FloatTensor<B>,
    head: FloatTensor<B>,
    targets: FloatTensor<B>,
    chunk: usize,
    keep: bool,
    per_row: bool,
) -> (FloatTensor<B>, FloatTensor<B>, Vec<FloatTensor<B>>) {
    let rows = hidden.shape()[0];
    let vocab = head.shape()[0];
    let mut state: Option<FloatTensor<B>> = None;
    let mut kept = Vec::new();
    for (start, size) in chunks(vocab, chunk) {
        let (_, logits) = chunk_logits::<B>(&hidden, &head, start, size);
        if keep {
            kept.push(logits.clone());
        }
        // The first chunk has no state to fold into; its logits stand in (unread).
        let (previous, first) = match state.take() {
            Some(state) => (state, false),
            None => (logits.clone(), true),
        };
        state = Some(B::cross_entropy_chunk(logits, targets.clone(), previous, start as u32, first));
    }
    let state = state.expect("a vocabulary has at least one row");
    let column = |i: usize| {
        B::float_reshape(B::float_slice(state.clone(), &[Slice::full(), Slice::from(i..i + 1)]), [rows].into())
    };
    let lse = B::float_add(column(0), B::float_log(column(1)));
    let rows_loss = B::float_sub(lse.clone(), column(2));
    (if per_row { rows_loss } else { B::float_sum(rows_loss) }, lse, kept)
}

#[derive(Debug)]
struct CrossEntropyBackward;

/// `hidden`, `head`, `targets`, `lse`, chunk size, the forward pass's logits per chunk (none when
/// they are recomputed).
type CrossEntropyState<B> =
    (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, usize, Vec<FloatTensor<B>>);

impl<B: FusedKernels> Backward<B, 2> for CrossEntropyBackward {
    type State = CrossEntropyState<B>;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_hidden, node_head] = ops.parents;
        let upstream = grads.consume::<B>(&ops.node);
        let (hidden, head, targets, lse, chunk, kept) = ops.state;
        let vocab = head.shape()[0];
        let mut dhidden: Option<FloatTensor<B>> = None;
        let mut dhead = Vec::new();
        let mut kept = kept.into_iter();
        for (start, size) in chunks(vocab, chunk) {
            let (weight, logits) = match kept.next() {
                Some(logits) => (chunk_weight::<B>(&head, start, size), logits),
                None => chunk_logits::<B>(&hidden, &head, start, size),
            };
            let dlogits =
                B::cross_entropy_chunk_backward(logits, targets.clone(), lse.clone(), upstream.clone(), start as u32);
            if node_head.is_some() {
                dhead.push(B::float_matmul(B::float_transpose(dlogits.clone()), hidden.clone()));
            }
            if node_hidden.is_some() {
                let part = B::frozen_matmul_forward(dlogits, weight, false);
                dhidden = Some(match dhidden {
                    Some(total) => B::float_add(total, part),
                    None => part,
                });
            }
        }
        if let (Some(node), Some(dhidden)) = (node_hidden, dhidden) {
            grads.register::<B>(node.id, dhidden);
        }
        if let Some(node) = node_head {
            let dhead = B::float_cat(dhead, 0);
            let dhead = if dhead.dtype() != head.dtype() { B::float_cast(dhead, head.dtype().into()) } else { dhead };
            grads.register::<B>(node.id, dhead);
        }
    }
}

pub(super) fn autodiff<B: FusedKernels, C: CheckpointStrategy>(
    hidden: FloatTensor<Autodiff<B, C>>,
    head: FloatTensor<Autodiff<B, C>>,
    targets: FloatTensor<Autodiff<B, C>>,
    chunk: usize,
    keep_logits: bool,
    per_row: bool,
) -> FloatTensor<Autodiff<B, C>> {
    let targets = targets.into_primitive();
    match CrossEntropyBackward.prepare::<C>([hidden.node(), head.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let (hidden, head) = (hidden.into_primitive(), head.into_primitive());
            let (loss, lse, kept) =
                forward::<B>(hidden.clone(), head.clone(), targets.clone(), chunk, keep_logits, per_row);
            prep.finish((hidden, head, targets, lse, chunk, kept), loss)
        }
        OpsKind::UnTracked(prep) => {
            prep.finish(forward::<B>(hidden.into_primitive(), head.into_primitive(), targets, chunk, false, per_row).0)
        }
    }
}
