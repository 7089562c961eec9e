//! The fused operations as the model calls them: each takes and returns plain tensors and goes
//! through [`FusedOps`] (one autodiff graph node) or, for the optimizer's passes, [`FusedKernels`]
//! directly. Each one's composed-ops reference, which the tests compare against, is named in its
//! doc comment.

use burn::backend::Dispatch;
use burn::tensor::{Device, Tensor};

use super::{FusedKernels, FusedOps, GATHER_INPUTS, LossChunks, SinkSlot};
use crate::model::config::Activation;

/// RMSNorm over the last dimension of `x [rows, d]` with `weight [d]`: Llama's
/// `x / sqrt(mean(x²) + eps) · weight` (`offset` 0) or Gemma's `… · (1 + weight)` (`offset` 1).
/// Reference: `model::layers::RmsNorm::forward`.
pub fn rms_norm(x: Tensor<2>, weight: Tensor<1>, eps: f64, offset: f32) -> Tensor<2> {
    Tensor::from_dispatch(Dispatch::fused_rms_norm(x.into_dispatch(), weight.into_dispatch(), eps as f32, offset))
}

/// The gated MLP activation `act(gate) · up` of `gate, up [tokens, intermediate]` (SwiGLU for
/// SiLU, GeGLU for the GELUs). Reference: `model::layers::activate(gate, act) * up`.
pub fn glu(gate: Tensor<2>, up: Tensor<2>, act: Activation) -> Tensor<2> {
    Tensor::from_dispatch(Dispatch::fused_glu(gate.into_dispatch(), up.into_dispatch(), super::glu::code(act)))
}

/// [`glu`] of `gate` and `up` packed as `gate_up [tokens, 2 · intermediate]` (each row's gate,
/// then its up: the product of packed gate and up weights); the gradient is one tensor in the
/// same layout. Reference: [`glu`] of the two halves.
pub fn glu_packed(gate_up: Tensor<2>, act: Activation) -> Tensor<2> {
    Tensor::from_dispatch(Dispatch::fused_glu_packed(gate_up.into_dispatch(), super::glu::code(act)))
}

/// `x [n, in] · W` in f32 for a frozen weight stored at any float width (`weight` `[out, in]`
/// when `transposed`, else `[in, out]`), whose backward pass keeps the stored weight rather than
/// its f32 cast (see the `frozen` module). Reference: `x.matmul(to_f32(weight))`, transposed.
pub fn frozen_matmul(x: Tensor<2>, weight: Tensor<2>, transposed: bool) -> Tensor<2> {
    Tensor::from_dispatch(Dispatch::frozen_matmul(x.into_dispatch(), weight.into_dispatch(), transposed))
}

/// A LoRA linear layer without bias or dropout, `x [n, in] · W + scale · (x · Aᵀ) · Bᵀ` → `[n, out]`
/// for a frozen `weight` stored as [`frozen_matmul`] takes it and `a [r, in]`, `b [out, r]`, as one
/// graph node (see the `lora` module). On a device with a shader loop limit, only for layers
/// [`lora_fits`](super::lora_fits) admits. Reference: `frozen_matmul(x, W) + x.matmul(aᵀ).matmul(bᵀ) · scale`
/// (`peft::lora`'s composed layer). With a `slot`, the backward pass adds the gradients of `a` and
/// `b` to its [`GradientSink`](super::GradientSink) instead of giving them to autodiff.
pub fn lora_linear(
    x: Tensor<2>,
    weight: Tensor<2>,
    transposed: bool,
    a: Tensor<2>,
    b: Tensor<2>,
    scale: f64,
    slot: Option<SinkSlot>,
) -> Tensor<2> {
    Tensor::from_dispatch(Dispatch::fused_lora(
        x.into_dispatch(),
        weight.into_dispatch(),
        transposed,
        a.into_dispatch(),
        b.into_dispatch(),
        scale as f32,
        slot,
    ))
}

/// What every attention layer of one forward pass shares, uploaded once: the key padding mask and
/// the RoPE tables.
#[derive(Clone)]
pub struct AttentionInputs {
    /// `[cos | sin | mask]` (see the `attention` module).
    aux: Tensor<1>,
    rope: bool,
}

impl AttentionInputs {
    /// `key_mask[b · len + j]` is 1 for a real token (`None`: no padding). `rope`: the `cos` and
    /// `sin` tables `[len, d]`, row-major, as transformers computes them (`cat(freqs, freqs)`).
    pub fn new(
        batch: usize,
        len: usize,
        key_mask: Option<&[u8]>,
        rope: Option<(&[f32], &[f32])>,
        device: &Device,
    ) -> Self {
        let aux = Self::values(batch, len, key_mask, rope);
        let size = aux.len();
        AttentionInputs { aux: crate::upload::floats(aux, [size], device), rope: rope.is_some() }
    }

    /// What [`AttentionInputs::new`] uploads: `[cos | sin | mask]`.
    pub fn values(batch: usize, len: usize, key_mask: Option<&[u8]>, rope: Option<(&[f32], &[f32])>) -> Vec<f32> {
        let mut aux = Vec::new();
        if let Some((cos, sin)) = rope {
            aux.extend_from_slice(cos);
            aux.extend_from_slice(sin);
        }
        match key_mask {
            Some(mask) => aux.extend(mask.iter().map(|&m| if m != 0 { 1.0 } else { 0.0 })),
            None => aux.extend(std::iter::repeat_n(1.0, batch * len)),
        }
        aux
    }

    /// Inputs already on the device: `aux` holds [`AttentionInputs::values`] (with the RoPE
    /// tables when `rope`).
    pub fn on_device(aux: Tensor<1>, rope: bool) -> Self {
        AttentionInputs { aux, rope }
    }
}

/// Causal self-attention of `q [batch, len, heads, d]` over `k, v [batch, len, kv_heads, d]`
/// (grouped-query heads), `scale` on the scores, a key sees only the last `window` positions
/// when set (query `i` sees key `j` iff `j ≤ i`, `i − j < window`, `j` not padding), RoPE on
/// q and k when `inputs` carry tables. Returns `[batch, len, heads, d]` (reshape to
/// `[tokens, heads·d]` for free). Never materialises the `[len, len]` scores. On a device with a
/// shader loop limit, only for shapes [`attention_fits`](super::attention_fits) admits. Reference: RoPE as
/// `model::layers::Rope::apply`, then the eager attention of `model::attention::AttentionContext`
/// (an additive `f32::MIN` mask), a query that sees no key giving the mean of v.
pub fn attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    inputs: &AttentionInputs,
    scale: f64,
    window: Option<usize>,
) -> Tensor<4> {
    let aux = if q.is_autodiff() { inputs.aux.clone().autodiff() } else { inputs.aux.clone() };
    Tensor::from_dispatch(Dispatch::fused_attention(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        aux.into_dispatch(),
        scale as f32,
        window.map_or(0, |w| w as u32),
        inputs.rope,
    ))
}

/// Sum over the rows of `hidden [rows, hidden]` of the cross-entropy `−log softmax(h·headᵀ)[target]`
/// (`head [vocab, hidden]`, `targets` one vocabulary id per row), `[1]`. The vocabulary is
/// processed [`LossChunks`]' chunk of ids at a time (one matmul and one kernel each), so no
/// `[rows, vocab]` tensor exists. The forward pass's logits are kept for the backward pass when
/// they hold at most [`KEEP_VALUES`](super::KEEP_VALUES) values (no more than the unchunked loss held), recomputed
/// chunk by chunk otherwise. Reference: `log_softmax(hidden.matmul(head.transpose()), 1)`
/// gathered at the targets, summed and negated (`train::loss_sum`).
pub fn cross_entropy_sum(hidden: Tensor<2>, head: Tensor<2>, targets: &[u32]) -> Tensor<1> {
    let (rows, vocab) = (hidden.dims()[0], head.dims()[0]);
    let LossChunks { chunk, keep_logits } = LossChunks::of(rows, vocab, usize::MAX);
    cross_entropy_sum_in_chunks(hidden, head, targets, chunk, keep_logits)
}

/// [`cross_entropy_sum`] with `chunk` vocabulary ids per chunk, the logits kept for the backward
/// pass or recomputed.
pub fn cross_entropy_sum_in_chunks(
    hidden: Tensor<2>,
    head: Tensor<2>,
    targets: &[u32],
    chunk: usize,
    keep_logits: bool,
) -> Tensor<1> {
    let targets = crate::upload::floats(targets.iter().map(|&t| t as f32).collect(), [targets.len()], &hidden.device());
    chunked_cross_entropy(hidden, head, targets, chunk, keep_logits, false)
}

/// The cross-entropy of each row of `hidden [rows, hidden]` against `head [vocab, hidden]`,
/// `[rows]`, for `targets [rows]` already on the device (ids as f32); a row whose target is no id
/// (−1) gets its log-sum-exp, which a caller weighting the rows gives weight 0. In chunks as
/// [`cross_entropy_sum_in_chunks`]. Reference: `-log_softmax(hidden.matmul(head.transpose()), 1)`
/// gathered at the targets.
pub fn cross_entropy_rows_in_chunks(
    hidden: Tensor<2>,
    head: Tensor<2>,
    targets: Tensor<1>,
    chunk: usize,
    keep_logits: bool,
) -> Tensor<1> {
    chunked_cross_entropy(hidden, head, targets, chunk, keep_logits, true)
}

/// `log Σ_j exp(h · head[j])` per row of `hidden [rows, hidden]` over `head [vocab, hidden]`,
/// `[rows]`, in chunks of `chunk` vocabulary ids as [`cross_entropy_sum_in_chunks`] (the same
/// kernels, with no target): the normaliser of one row block of a head split into blocks
/// (`model::table::Table::target_log_probs` combines the blocks'). Reference:
/// `hidden.matmul(head.transpose())`'s log-sum-exp over dimension 1.
pub fn log_sum_exp_in_chunks(hidden: Tensor<2>, head: Tensor<2>, chunk: usize, keep_logits: bool) -> Tensor<1> {
    let rows = hidden.dims()[0];
    let targets = crate::upload::floats(vec![NO_TARGET; rows], [rows], &hidden.device());
    chunked_cross_entropy(hidden, head, targets, chunk, keep_logits, true)
}

/// A target id no vocabulary chunk holds: its rows' loss is their log-sum-exp.
const NO_TARGET: f32 = -1.0;

fn chunked_cross_entropy(
    hidden: Tensor<2>,
    head: Tensor<2>,
    targets: Tensor<1>,
    chunk: usize,
    keep_logits: bool,
    per_row: bool,
) -> Tensor<1> {
    Tensor::from_dispatch(Dispatch::fused_cross_entropy(
        hidden.into_dispatch(),
        head.into_dispatch(),
        targets.into_dispatch(),
        chunk as u32,
        keep_logits,
        per_row,
    ))
}

/// One AdamW update of every trainable value, laid end to end in `param [n]` and the first `n`
/// values of `grad` (as [`gather`] leaves them; the rest is not read), with
/// `moments [2, n]` (first, then second moment), the gradient's global `norm [1]` and the
/// update's scalars `[AdamWStep::LEN]` ([`AdamWStep::values`](super::AdamWStep::values)): returns the updated
/// `(param, moments)`. On the GPU they are the same buffers, updated in place (every view of
/// `param` sees the update); on the CPU, new tensors. Not differentiable (optimizer state).
/// Reference: the composed update of `train::optim`.
pub fn adamw(
    param: Tensor<1>,
    grad: Tensor<1>,
    moments: Tensor<2>,
    norm: Tensor<1>,
    scalars: Tensor<1>,
) -> (Tensor<1>, Tensor<2>) {
    let (param, moments) = Dispatch::adamw_update(
        param.into_dispatch(),
        grad.into_dispatch(),
        moments.into_dispatch(),
        norm.into_dispatch(),
        scalars.into_dispatch(),
    );
    (Tensor::from_dispatch(param), Tensor::from_dispatch(moments))
}

/// `dest [n]` holding `src [n]`'s values, written in place on the GPU (every holder of `dest`
/// sees them), `src` itself on the CPU. Not differentiable.
pub fn copy_into(dest: Tensor<1>, src: Tensor<1>) -> Tensor<1> {
    Tensor::from_dispatch(Dispatch::copy_into(dest.into_dispatch(), src.into_dispatch()))
}

/// `tensors` flattened (row-major) and laid end to end, and their global L2 norm `[1]`, in
/// `⌈k / GATHER_INPUTS⌉ + 1` dispatches for `k` tensors of any strides (burn's `cat` launches one
/// per tensor, and one more per tensor that is not contiguous; its norm four). The buffer is
/// `[values (n) | partial sums of squares]`: the values are its first `n` (a `narrow` to them
/// would cost a copy under burn's fusion; [`adamw`] reads a gradient's first `n` values). Not
/// differentiable (the optimizer's gradients). Reference: `Tensor::cat` of the tensors reshaped to
/// one dimension, and its `square().sum().sqrt()`.
pub fn gather(tensors: Vec<Tensor<2>>) -> (Tensor<1>, Tensor<1>) {
    let first = tensors.first().expect("gather needs a tensor");
    let chunks: Vec<&[Tensor<2>]> = tensors.chunks(GATHER_INPUTS).collect();
    let sizes: Vec<usize> = chunks.iter().map(|c| c.iter().map(|t| t.shape().num_elements()).sum()).collect();
    let n: usize = sizes.iter().sum();
    let blocks: usize = sizes.iter().map(|&size| super::gather::blocks(size)).sum();
    let mut out = Tensor::<1>::empty([n + blocks], (&first.device(), first.dtype()));
    let (mut offset, mut partials_at) = (0, n);
    for (chunk, size) in chunks.into_iter().zip(sizes) {
        // Slots past `count` are not read; any tensor fills them.
        let [a, b, c, d, e, f] = std::array::from_fn(|i| chunk.get(i).unwrap_or(&chunk[0]).clone().into_dispatch());
        let (count, at) = (chunk.len() as u32, partials_at as u32);
        let dest = out.into_dispatch();
        out = Tensor::from_dispatch(Dispatch::gather_into(dest, a, b, c, d, e, f, offset as u32, count, at));
        offset += size;
        partials_at += super::gather::blocks(size);
    }
    let norm = Tensor::from_dispatch(Dispatch::sqrt_of_sum(out.clone().into_dispatch(), n as u32));
    (out, norm)
}
