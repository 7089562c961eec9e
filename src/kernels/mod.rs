//! Fused training kernels: each operation of a LoRA training step that burn would run as many
//! small GPU dispatches, written as one CubeCL kernel (forward) and one (backward), so that a step
//! costs few launches and no large intermediates.
//!
//! Two layers, both burn backend extensions (`burn::backend::backend_extension`):
//! - [`FusedKernels`]: the kernels themselves, forward and backward, on plain (not autodiff)
//!   tensors. CubeCL `#[cube]` kernels on burn's CubeCL backend (wgpu natively, WebGPU in the
//!   browser; lazily recorded under burn's fusion), plain tensor ops on the Flex CPU backend.
//! - [`FusedOps`]: the differentiable operations the model calls; on burn's autodiff backend each
//!   records one graph node whose handwritten backward runs the backward kernel.
//!
//! WebGPU limits every kernel here keeps to: no subgroups, no f64, at most 256 invocations and
//! 16 KiB of workgroup memory per workgroup, at most 65,535 workgroups per grid dimension.
//!
//! The functions at the bottom are the API the model uses; each one's composed-ops reference (the
//! tests compare against it) is named in its doc comment. The `*_composed` functions are the Flex
//! CPU backend's kernels, so unused in wasm (which has only the GPU backend).

mod adamw;
mod attention;
mod backends;
mod cross_entropy;
mod cube;
#[cfg(not(target_arch = "wasm32"))]
mod flex;
mod frozen;
mod gather;
mod glu;
mod lora;
mod rms_norm;

pub use adamw::AdamWStep;
pub use attention::{AttentionShape, MASKED_ROW, fits as attention_fits};
pub use cross_entropy::{KEEP_VALUES, LossChunks};
pub use gather::GATHER_INPUTS;
pub use lora::{GradientSink, Placement, SinkSlot, fits as lora_fits};

use burn::backend::fusion::custom::TensorSpec;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, backend_extension};
use burn::tensor::{Device, Shape, Tensor, TensorData};

use crate::model::config::Activation;

/// The kernels: forward and backward of each fused operation, on plain tensors.
#[backend_extension(Cube, Flex: cfg(not(target_arch = "wasm32")), Fusion)]
pub trait FusedKernels: Backend {
    /// RMSNorm of each row of `x [rows, d]`: `y = x · r · (offset + weight)` with
    /// `r = 1 / sqrt(mean(x²) + eps)`, and `r [rows]` for the backward pass.
    #[fusion(meta = |x, _weight, _eps, _offset| (x.clone(), TensorSpec::new(Shape::new([x.shape[0]]), x.dtype)))]
    fn rms_norm_forward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        eps: f32,
        offset: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// The input gradient of [`FusedKernels::rms_norm_forward`]:
    /// `dx = r · (g − x · r² · mean(g · x))` with `g = dy · (offset + weight)`, plus `other`
    /// `[rows, d]` when `add_other` (the gradient another consumer of `x` gave it; autodiff would
    /// add it in a dispatch of its own). `other` is not read without `add_other`.
    #[fusion(meta = |x, _weight, _inv_rms, _dy, _other, _add_other, _offset| x.clone())]
    fn rms_norm_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        inv_rms: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        other: FloatTensor<Self>,
        add_other: bool,
        offset: f32,
    ) -> FloatTensor<Self>;

    /// `x [n, in] · W` in `x`'s type for a frozen `weight` of any float width, `[out, in]` when
    /// `transposed`, `[in, out]` otherwise: `[n, out]` (see the `frozen` module).
    #[fusion(meta = |x, weight, transposed| TensorSpec::new(
        Shape::new([x.shape[0], if *transposed { weight.shape[0] } else { weight.shape[1] }]),
        x.dtype,
    ))]
    fn frozen_matmul_forward(x: FloatTensor<Self>, weight: FloatTensor<Self>, transposed: bool) -> FloatTensor<Self>;

    /// `act(gate) · up` elementwise; `act` is [`glu::code`] of an [`Activation`].
    #[fusion(meta = |gate, _up, _act| gate.clone())]
    fn glu_forward(gate: FloatTensor<Self>, up: FloatTensor<Self>, act: u32) -> FloatTensor<Self>;

    /// `(dgate, dup) = (dout · up · act'(gate), dout · act(gate))`.
    #[fusion(meta = |gate, _up, _dout, _act| (gate.clone(), gate.clone()))]
    fn glu_backward(
        gate: FloatTensor<Self>,
        up: FloatTensor<Self>,
        dout: FloatTensor<Self>,
        act: u32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// [`FusedKernels::glu_forward`] of `gate_up [rows, 2·w]`, each row's gate then its up:
    /// `[rows, w]`.
    #[fusion(meta = |gate_up, _act| TensorSpec::new(Shape::new([gate_up.shape[0], gate_up.shape[1] / 2]), gate_up.dtype))]
    fn glu_packed_forward(gate_up: FloatTensor<Self>, act: u32) -> FloatTensor<Self>;

    /// [`FusedKernels::glu_backward`] of the packed layout: `d_gate_up [rows, 2·w]`.
    #[fusion(meta = |gate_up, _dout, _act| gate_up.clone())]
    fn glu_packed_backward(gate_up: FloatTensor<Self>, dout: FloatTensor<Self>, act: u32) -> FloatTensor<Self>;

    /// The LoRA layer's forward after the frozen product `base [n, out]`: `u = x [n, in] · at
    /// [in, r]` (`at` = `A` viewed transposed, `r` a LoRA rank) and `base + scale · u · b
    /// [out, r]ᵀ`, in one dispatch; operands of any strides (see the `lora` module). `(y, u)`.
    #[fusion(meta = |base, _x, at, _b, _scale| (base.clone(), TensorSpec::new(Shape::new([base.shape[0], at.shape[1]]), base.dtype)))]
    fn lora_forward(
        base: FloatTensor<Self>,
        x: FloatTensor<Self>,
        at: FloatTensor<Self>,
        b: FloatTensor<Self>,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// `dest [len]` with `scale · lhs [m, k] · rhs [k, r]` (`r` a LoRA rank) added where `place`
    /// says (in place on the GPU).
    #[fusion(meta = |dest, _lhs, _rhs, _scale, _place| dest.clone())]
    fn lora_project_add(
        dest: FloatTensor<Self>,
        lhs: FloatTensor<Self>,
        rhs: FloatTensor<Self>,
        scale: f32,
        place: Placement,
    ) -> FloatTensor<Self>;

    /// The LoRA layer's first backward dispatch: `du = scale · g [n, out] · b [out, r]` `[n, r]`,
    /// and `scale · gt [out, n] · u [n, r]` (`dB`, `gt` = `g` viewed transposed) added to
    /// `db [len]` where `place` says (in place on the GPU). `(du, db)`.
    #[fusion(meta = |g, _gt, b, _u, db, _scale, _place| (TensorSpec::new(Shape::new([g.shape[0], b.shape[1]]), g.dtype), db.clone()))]
    fn lora_backward_b(
        g: FloatTensor<Self>,
        gt: FloatTensor<Self>,
        b: FloatTensor<Self>,
        u: FloatTensor<Self>,
        db: FloatTensor<Self>,
        scale: f32,
        place: Placement,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// The LoRA layer's last backward dispatch: `xt [in, n] · du [n, r]` (`dAᵀ`) added to
    /// `da [len]` where `place` says, and `dx [n, in] + du · at [in, r]ᵀ` (`at` = `A` viewed
    /// transposed), both in place on the GPU. `(da, dx)`.
    #[fusion(meta = |_xt, _du, _at, da, dx, _place| (da.clone(), dx.clone()))]
    fn lora_backward_a(
        xt: FloatTensor<Self>,
        du: FloatTensor<Self>,
        at: FloatTensor<Self>,
        da: FloatTensor<Self>,
        dx: FloatTensor<Self>,
        place: Placement,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// One AdamW update of flat `param [n]` with `grad [≥ n]` (its first `n`) and `moments [2, n]`
    /// (m, then v), the gradient clipped by its global `norm [1]`: returns `[3, n]` (param, m, v).
    #[fusion(meta = |param, _grad, _moments, _norm, _step| TensorSpec::new(Shape::new([3, param.shape[0]]), param.dtype))]
    fn adamw_update(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        moments: FloatTensor<Self>,
        norm: FloatTensor<Self>,
        step: AdamWStep,
    ) -> FloatTensor<Self>;

    /// `dest` with the first `count` of `a`..`f` (`[rows, cols]`, row-major order) copied end to
    /// end from `offset` on, and the sums of squares of each 256 of them from `partials_at` on.
    #[fusion(meta = |dest, _a, _b, _c, _d, _e, _f, _offset, _count, _partials_at| dest.clone())]
    #[allow(clippy::too_many_arguments)]
    fn gather_into(
        dest: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        c: FloatTensor<Self>,
        d: FloatTensor<Self>,
        e: FloatTensor<Self>,
        f: FloatTensor<Self>,
        offset: u32,
        count: u32,
        partials_at: u32,
    ) -> FloatTensor<Self>;

    /// `√(Σ buffer[from..])` of a 1-D `buffer`, `[1]`.
    #[fusion(meta = |buffer, _from| TensorSpec::new(Shape::new([1]), buffer.dtype))]
    fn sqrt_of_sum(buffer: FloatTensor<Self>, from: u32) -> FloatTensor<Self>;

    /// Causal attention of `q [b, len, heads, d]` over `k, v [b, len, kv_heads, d]` with the
    /// mask and RoPE tables of `aux` (see the `attention` module): `[out | lse]`, flat (`lse`
    /// padded to [`cube::aligned`] so that the output is a view).
    #[fusion(meta = |q, _k, _v, _aux, _scale, _window, _rope| TensorSpec::new(
        Shape::new([q.shape.num_elements() + cube::aligned(q.shape[0] * q.shape[1] * q.shape[2])]),
        q.dtype,
    ))]
    fn attention_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        aux: FloatTensor<Self>,
        scale: f32,
        window: u32,
        rope: bool,
    ) -> FloatTensor<Self>;

    /// Folds one chunk of logits `[rows, width]` (vocabulary ids `start..start + width`) into each
    /// row's running `state [rows, 3]`: max, sum of `exp(logit − max)`, target logit (0 until the
    /// chunk holding the target). `first`: there is no state yet (`state` is not read).
    #[fusion(meta = |logits, _targets, _state, _start, _first| TensorSpec::new(Shape::new([logits.shape[0], 3]), logits.dtype))]
    fn cross_entropy_chunk(
        logits: FloatTensor<Self>,
        targets: FloatTensor<Self>,
        state: FloatTensor<Self>,
        start: u32,
        first: bool,
    ) -> FloatTensor<Self>;

    /// `(softmax − onehot(target)) · upstream` of one chunk of logits, given each row's `lse`;
    /// `upstream` is `[1]` (a summed loss) or `[rows]` (per-row losses).
    #[fusion(meta = |logits, _targets, _lse, _upstream, _start| logits.clone())]
    fn cross_entropy_chunk_backward(
        logits: FloatTensor<Self>,
        targets: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        upstream: FloatTensor<Self>,
        start: u32,
    ) -> FloatTensor<Self>;

    /// `(dq, dk, dv)` of [`FusedKernels::attention_forward`] given its packed output `saved`.
    #[fusion(meta = |q, k, v, _aux, _saved, _dout, _scale, _window, _rope| (q.clone(), k.clone(), v.clone()))]
    #[allow(clippy::too_many_arguments)]
    fn attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        aux: FloatTensor<Self>,
        saved: FloatTensor<Self>,
        dout: FloatTensor<Self>,
        scale: f32,
        window: u32,
        rope: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// The differentiable fused operations.
#[backend_extension(Cube, Flex: cfg(not(target_arch = "wasm32")), Autodiff)]
pub trait FusedOps: Backend {
    /// See [`rms_norm`].
    fn fused_rms_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, eps: f32, offset: f32) -> FloatTensor<Self>;

    /// See [`glu`].
    fn fused_glu(gate: FloatTensor<Self>, up: FloatTensor<Self>, act: u32) -> FloatTensor<Self>;

    /// See [`glu_packed`].
    fn fused_glu_packed(gate_up: FloatTensor<Self>, act: u32) -> FloatTensor<Self>;

    /// See [`frozen_matmul`].
    fn frozen_matmul(x: FloatTensor<Self>, weight: FloatTensor<Self>, transposed: bool) -> FloatTensor<Self>;

    /// See [`lora_linear`].
    #[allow(clippy::too_many_arguments)]
    fn fused_lora(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        transposed: bool,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        scale: f32,
        slot: Option<SinkSlot>,
    ) -> FloatTensor<Self>;

    /// See [`cross_entropy_sum`] (`per_row`: each row's loss `[rows]`, as
    /// [`log_sum_exp_in_chunks`] uses it, instead of their sum `[1]`).
    fn fused_cross_entropy(
        hidden: FloatTensor<Self>,
        head: FloatTensor<Self>,
        targets: FloatTensor<Self>,
        chunk: u32,
        keep_logits: bool,
        per_row: bool,
    ) -> FloatTensor<Self>;

    /// See [`attention`].
    fn fused_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        aux: FloatTensor<Self>,
        scale: f32,
        window: u32,
        rope: bool,
    ) -> FloatTensor<Self>;
}

/// RMSNorm over the last dimension of `x [rows, d]` with `weight [d]`: Llama's
/// `x / sqrt(mean(x²) + eps) · weight` (`offset` 0) or Gemma's `… · (1 + weight)` (`offset` 1).
/// Reference: `model::layers::RmsNorm::forward`.
pub fn rms_norm(x: Tensor<2>, weight: Tensor<1>, eps: f64, offset: f32) -> Tensor<2> {
    Tensor::from_dispatch(Dispatch::fused_rms_norm(x.into_dispatch(), weight.into_dispatch(), eps as f32, offset))
}

/// The gated MLP activation `act(gate) · up` of `gate, up [tokens, intermediate]` (SwiGLU for
/// SiLU, GeGLU for the GELUs). Reference: `model::layers::activate(gate, act) * up`.
pub fn glu(gate: Tensor<2>, up: Tensor<2>, act: Activation) -> Tensor<2> {
    Tensor::from_dispatch(Dispatch::fused_glu(gate.into_dispatch(), up.into_dispatch(), glu::code(act)))
}

/// [`glu`] of `gate` and `up` packed as `gate_up [tokens, 2 · intermediate]` (each row's gate,
/// then its up: the product of packed gate and up weights); the gradient is one tensor in the
/// same layout. Reference: [`glu`] of the two halves.
pub fn glu_packed(gate_up: Tensor<2>, act: Activation) -> Tensor<2> {
    Tensor::from_dispatch(Dispatch::fused_glu_packed(gate_up.into_dispatch(), glu::code(act)))
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
/// [`lora_fits`] admits. Reference: `frozen_matmul(x, W) + x.matmul(aᵀ).matmul(bᵀ) · scale`
/// (`peft::lora`'s composed layer). With a `slot`, the backward pass adds the gradients of `a` and
/// `b` to its [`GradientSink`] instead of giving them to autodiff.
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
        let mut aux = Vec::new();
        if let Some((cos, sin)) = rope {
            aux.extend_from_slice(cos);
            aux.extend_from_slice(sin);
        }
        match key_mask {
            Some(mask) => aux.extend(mask.iter().map(|&m| if m != 0 { 1.0 } else { 0.0 })),
            None => aux.extend(std::iter::repeat_n(1.0, batch * len)),
        }
        let size = aux.len();
        AttentionInputs { aux: Tensor::from_data(TensorData::new(aux, [size]), device), rope: rope.is_some() }
    }
}

/// Causal self-attention of `q [batch, len, heads, d]` over `k, v [batch, len, kv_heads, d]`
/// (grouped-query heads), `scale` on the scores, a key sees only the last `window` positions
/// when set (query `i` sees key `j` iff `j ≤ i`, `i − j < window`, `j` not padding), RoPE on
/// q and k when `inputs` carry tables. Returns `[batch, len, heads, d]` (reshape to
/// `[tokens, heads·d]` for free). Never materialises the `[len, len]` scores. On a device with a
/// shader loop limit, only for shapes [`attention_fits`] admits. Reference: RoPE as
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
/// they hold at most [`KEEP_VALUES`] values (no more than the unchunked loss held), recomputed
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
    let targets: Vec<f32> = targets.iter().map(|&t| t as f32).collect();
    chunked_cross_entropy(hidden, head, targets, chunk, keep_logits, false)
}

/// `log Σ_j exp(h · head[j])` per row of `hidden [rows, hidden]` over `head [vocab, hidden]`,
/// `[rows]`, in chunks of `chunk` vocabulary ids as [`cross_entropy_sum_in_chunks`] (the same
/// kernels, with no target): the normaliser of one row block of a head split into blocks
/// (`model::table::Table::target_log_probs` combines the blocks'). Reference:
/// `hidden.matmul(head.transpose())`'s log-sum-exp over dimension 1.
pub fn log_sum_exp_in_chunks(hidden: Tensor<2>, head: Tensor<2>, chunk: usize, keep_logits: bool) -> Tensor<1> {
    let rows = hidden.dims()[0];
    chunked_cross_entropy(hidden, head, vec![NO_TARGET; rows], chunk, keep_logits, true)
}

/// A target id no vocabulary chunk holds: its rows' loss is their log-sum-exp.
const NO_TARGET: f32 = -1.0;

fn chunked_cross_entropy(
    hidden: Tensor<2>,
    head: Tensor<2>,
    targets: Vec<f32>,
    chunk: usize,
    keep_logits: bool,
    per_row: bool,
) -> Tensor<1> {
    let rows = targets.len();
    let targets = Tensor::<1>::from_data(TensorData::new(targets, [rows]), &hidden.device());
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
/// `moments [2, n]` (first, then second moment) and the gradient's global `norm [1]`: returns
/// `[3, n]` (updated param, m, v). Not differentiable (optimizer state). Reference: the composed
/// update of `train::optim`.
pub fn adamw(param: Tensor<1>, grad: Tensor<1>, moments: Tensor<2>, norm: Tensor<1>, step: AdamWStep) -> Tensor<2> {
    Tensor::from_dispatch(Dispatch::adamw_update(
        param.into_dispatch(),
        grad.into_dispatch(),
        moments.into_dispatch(),
        norm.into_dispatch(),
        step,
    ))
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
    let blocks: usize = sizes.iter().map(|&size| gather::blocks(size)).sum();
    let mut out = Tensor::<1>::empty([n + blocks], (&first.device(), first.dtype()));
    let (mut offset, mut partials_at) = (0, n);
    for (chunk, size) in chunks.into_iter().zip(sizes) {
        // Slots past `count` are not read; any tensor fills them.
        let [a, b, c, d, e, f] = std::array::from_fn(|i| chunk.get(i).unwrap_or(&chunk[0]).clone().into_dispatch());
        let (count, at) = (chunk.len() as u32, partials_at as u32);
        let dest = out.into_dispatch();
        out = Tensor::from_dispatch(Dispatch::gather_into(dest, a, b, c, d, e, f, offset as u32, count, at));
        offset += size;
        partials_at += gather::blocks(size);
    }
    let norm = Tensor::from_dispatch(Dispatch::sqrt_of_sum(out.clone().into_dispatch(), n as u32));
    (out, norm)
}
