//! How burn's GPU backend provides the two traits: [`FusedKernels`] as CubeCL kernels on
//! `CubeBackend` (the fusion layer wraps them as custom operations), [`FusedOps`] on the fused
//! `Cube` backend and, for any backend with the kernels, on autodiff (a graph node each, whose
//! backward pass runs the backward kernel). The Flex CPU backend's are in the `flex` module.

use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Cube, DispatchKindConversion, DispatchTensor, TensorMetadata};
use burn_cubecl::CubeBackend;

use super::{
    FusedKernels, FusedOps, Placement, SinkSlot, adamw, attention, cross_entropy, frozen, gather, glu, lora, rms_norm,
};

impl FusedKernels for CubeBackend {
    fn rms_norm_forward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        eps: f32,
        offset: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        rms_norm::forward_cube(x, weight, eps, offset)
    }

    fn rms_norm_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        inv_rms: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        other: FloatTensor<Self>,
        add_other: bool,
        offset: f32,
    ) -> FloatTensor<Self> {
        rms_norm::backward_cube(x, weight, inv_rms, dy, add_other.then_some(other), offset)
    }

    fn frozen_matmul_forward(x: FloatTensor<Self>, weight: FloatTensor<Self>, transposed: bool) -> FloatTensor<Self> {
        frozen::forward_cube(x, weight, transposed)
    }

    fn glu_forward(gate: FloatTensor<Self>, up: FloatTensor<Self>, act: u32) -> FloatTensor<Self> {
        glu::forward_cube(gate, up, act)
    }

    fn glu_backward(
        gate: FloatTensor<Self>,
        up: FloatTensor<Self>,
        dout: FloatTensor<Self>,
        act: u32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        glu::backward_cube(gate, up, dout, act)
    }

    fn glu_packed_forward(gate_up: FloatTensor<Self>, act: u32) -> FloatTensor<Self> {
        glu::packed_forward_cube(gate_up, act)
    }

    fn glu_packed_backward(gate_up: FloatTensor<Self>, dout: FloatTensor<Self>, act: u32) -> FloatTensor<Self> {
        glu::packed_backward_cube(gate_up, dout, act)
    }

    fn lora_forward(
        base: FloatTensor<Self>,
        x: FloatTensor<Self>,
        at: FloatTensor<Self>,
        b: FloatTensor<Self>,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        lora::forward_cube(base, x, at, b, scale)
    }

    fn lora_project_add(
        dest: FloatTensor<Self>,
        lhs: FloatTensor<Self>,
        rhs: FloatTensor<Self>,
        scale: f32,
        place: Placement,
    ) -> FloatTensor<Self> {
        lora::project_add_cube(dest, lhs, rhs, scale, place)
    }

    fn lora_backward_b(
        g: FloatTensor<Self>,
        gt: FloatTensor<Self>,
        b: FloatTensor<Self>,
        u: FloatTensor<Self>,
        db: FloatTensor<Self>,
        scale: f32,
        place: Placement,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        lora::backward_b_cube(g, gt, b, u, db, scale, place)
    }

    fn lora_backward_a(
        xt: FloatTensor<Self>,
        du: FloatTensor<Self>,
        at: FloatTensor<Self>,
        da: FloatTensor<Self>,
        dx: FloatTensor<Self>,
        place: Placement,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        lora::backward_a_cube(xt, du, at, da, dx, place)
    }

    fn adamw_update(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        moments: FloatTensor<Self>,
        norm: FloatTensor<Self>,
        scalars: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        adamw::update_cube(param, grad, moments, norm, scalars)
    }

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
    ) -> FloatTensor<Self> {
        gather::into_cube(dest, [a, b, c, d, e, f], offset, count, partials_at)
    }

    fn sqrt_of_sum(buffer: FloatTensor<Self>, from: u32) -> FloatTensor<Self> {
        gather::norm_cube(buffer, from)
    }

    fn copy_into(dest: FloatTensor<Self>, src: FloatTensor<Self>) -> FloatTensor<Self> {
        gather::copy_cube(dest, src)
    }

    fn cross_entropy_chunk(
        logits: FloatTensor<Self>,
        targets: FloatTensor<Self>,
        state: FloatTensor<Self>,
        start: u32,
        first: bool,
    ) -> FloatTensor<Self> {
        cross_entropy::chunk_forward_cube(logits, targets, state, start, first)
    }

    fn cross_entropy_chunk_backward(
        logits: FloatTensor<Self>,
        targets: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        upstream: FloatTensor<Self>,
        start: u32,
    ) -> FloatTensor<Self> {
        cross_entropy::chunk_backward_cube(logits, targets, lse, upstream, start)
    }

    fn attention_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        aux: FloatTensor<Self>,
        scale: f32,
        window: u32,
        rope: bool,
    ) -> FloatTensor<Self> {
        attention::forward_cube(q, k, v, aux, scale, window, rope)
    }

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
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        attention::backward_cube_split(q, k, v, aux, saved, dout, scale, window, rope)
    }
}

impl FusedOps for Cube {
    fn fused_cross_entropy(
        hidden: FloatTensor<Self>,
        head: FloatTensor<Self>,
        targets: FloatTensor<Self>,
        chunk: u32,
        _keep_logits: bool,
        per_row: bool,
    ) -> FloatTensor<Self> {
        cross_entropy::forward::<Self>(hidden, head, targets, chunk as usize, false, per_row).0
    }

    fn fused_rms_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, eps: f32, offset: f32) -> FloatTensor<Self> {
        Self::rms_norm_forward(x, weight, eps, offset).0
    }

    fn fused_glu(gate: FloatTensor<Self>, up: FloatTensor<Self>, act: u32) -> FloatTensor<Self> {
        Self::glu_forward(gate, up, act)
    }

    fn fused_glu_packed(gate_up: FloatTensor<Self>, act: u32) -> FloatTensor<Self> {
        Self::glu_packed_forward(gate_up, act)
    }

    fn frozen_matmul(x: FloatTensor<Self>, weight: FloatTensor<Self>, transposed: bool) -> FloatTensor<Self> {
        Self::frozen_matmul_forward(x, weight, transposed)
    }

    #[allow(clippy::too_many_arguments)]
    fn fused_lora(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        transposed: bool,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        scale: f32,
        _slot: Option<SinkSlot>,
    ) -> FloatTensor<Self> {
        lora::plain::<Self>(x, weight, transposed, a, b, scale)
    }

    fn fused_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        aux: FloatTensor<Self>,
        scale: f32,
        window: u32,
        rope: bool,
    ) -> FloatTensor<Self> {
        let shape = q.shape().dims::<4>();
        attention::output::<Self>(Self::attention_forward(q, k, v, aux, scale, window, rope), shape)
    }
}

impl<B: FusedKernels, C: CheckpointStrategy> FusedOps for Autodiff<B, C>
where
    DispatchTensor: DispatchKindConversion<B>,
{
    fn fused_cross_entropy(
        hidden: FloatTensor<Self>,
        head: FloatTensor<Self>,
        targets: FloatTensor<Self>,
        chunk: u32,
        keep_logits: bool,
        per_row: bool,
    ) -> FloatTensor<Self> {
        cross_entropy::autodiff::<B, C>(hidden, head, targets, chunk as usize, keep_logits, per_row)
    }

    fn fused_rms_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, eps: f32, offset: f32) -> FloatTensor<Self> {
        rms_norm::autodiff::<B, C>(x, weight, eps, offset)
    }

    fn fused_glu(gate: FloatTensor<Self>, up: FloatTensor<Self>, act: u32) -> FloatTensor<Self> {
        glu::autodiff::<B, C>(gate, up, act)
    }

    fn fused_glu_packed(gate_up: FloatTensor<Self>, act: u32) -> FloatTensor<Self> {
        glu::packed_autodiff::<B, C>(gate_up, act)
    }

    fn frozen_matmul(x: FloatTensor<Self>, weight: FloatTensor<Self>, transposed: bool) -> FloatTensor<Self> {
        frozen::autodiff::<B, C>(x, weight, transposed)
    }

    #[allow(clippy::too_many_arguments)]
    fn fused_lora(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        transposed: bool,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        scale: f32,
        slot: Option<SinkSlot>,
    ) -> FloatTensor<Self> {
        lora::autodiff::<B, C>(x, weight, transposed, a, b, scale, slot)
    }

    fn fused_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        aux: FloatTensor<Self>,
        scale: f32,
        window: u32,
        rope: bool,
    ) -> FloatTensor<Self> {
        attention::autodiff::<B, C>(q, k, v, aux, scale, window, rope)
    }
}
