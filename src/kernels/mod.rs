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
//! The functions the model calls are in `api` (re-exported here). The `*_composed` functions are
//! the Flex CPU backend's kernels, so unused in wasm (which has only the GPU backend).

mod adamw;
mod api;
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
pub use api::*;
pub use attention::{AttentionShape, MASKED_ROW, fits as attention_fits};
pub use cross_entropy::{KEEP_VALUES, LossChunks};
pub use cube::aligned;
pub use gather::GATHER_INPUTS;
pub use lora::{GradientSink, Placement, SinkSlot, fits as lora_fits};

use burn::backend::fusion::custom::TensorSpec;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, backend_extension};
use burn::tensor::Shape;

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

    /// `act(gate) · up` elementwise; `act` is [`glu::code`] of an
    /// [`Activation`](crate::model::config::Activation).
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
    /// (m, then v), the gradient clipped by its global `norm [1]`, with the scalars
    /// `[AdamWStep::LEN]` of [`AdamWStep::values`]: the updated `(param, moments)`, in place on the
    /// GPU (contiguous `param` and `moments`), new tensors on the CPU.
    #[fusion(meta = |param, _grad, moments, _norm, _scalars| (param.clone(), moments.clone()))]
    fn adamw_update(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        moments: FloatTensor<Self>,
        norm: FloatTensor<Self>,
        scalars: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

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

    /// `dest [n]` holding `src [n]`'s values: written in place on the GPU (a contiguous `dest`),
    /// `src` itself on the CPU.
    #[fusion(meta = |dest, _src| dest.clone())]
    fn copy_into(dest: FloatTensor<Self>, src: FloatTensor<Self>) -> FloatTensor<Self>;

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
