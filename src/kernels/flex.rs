//! The CPU backend (burn's Flex) runs the composed-ops formulation of every fused operation: on a
//! CPU each op is a loop, and a launch costs nothing.

use burn::backend::tensor::FloatTensor;
use burn::backend::{Flex, TensorMetadata};
use burn::tensor::Tensor;

use super::{FusedKernels, Placement, SinkSlot, adamw, attention, cross_entropy, gather, glu, lora, rms_norm};

fn wrap<const D: usize>(primitive: FloatTensor<Flex>) -> Tensor<D> {
    Tensor::from_primitive::<Flex>(primitive)
}

fn unwrap<const D: usize>(tensor: Tensor<D>) -> FloatTensor<Flex> {
    tensor.try_into_primitive::<Flex>().expect("a Flex tensor stays on Flex")
}

impl FusedKernels for Flex {
    fn rms_norm_forward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        eps: f32,
        offset: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (y, inv_rms) = rms_norm::forward_composed(wrap(x), wrap(weight), eps, offset);
        (unwrap(y), unwrap(inv_rms))
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
        let other = add_other.then(|| wrap(other));
        unwrap(rms_norm::backward_composed(wrap(x), wrap(weight), wrap(inv_rms), wrap(dy), other, offset))
    }

    fn frozen_matmul_forward(x: FloatTensor<Self>, weight: FloatTensor<Self>, transposed: bool) -> FloatTensor<Self> {
        super::frozen::forward::<Self>(x, weight, transposed)
    }

    fn glu_forward(gate: FloatTensor<Self>, up: FloatTensor<Self>, act: u32) -> FloatTensor<Self> {
        unwrap(glu::forward_composed(wrap(gate), wrap(up), act))
    }

    fn glu_backward(
        gate: FloatTensor<Self>,
        up: FloatTensor<Self>,
        dout: FloatTensor<Self>,
        act: u32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (dgate, dup) = glu::backward_composed(wrap(gate), wrap(up), wrap(dout), act);
        (unwrap(dgate), unwrap(dup))
    }

    fn glu_packed_forward(gate_up: FloatTensor<Self>, act: u32) -> FloatTensor<Self> {
        unwrap(glu::packed_forward_composed(wrap(gate_up), act))
    }

    fn glu_packed_backward(gate_up: FloatTensor<Self>, dout: FloatTensor<Self>, act: u32) -> FloatTensor<Self> {
        unwrap(glu::packed_backward_composed(wrap(gate_up), wrap(dout), act))
    }

    fn lora_forward(
        base: FloatTensor<Self>,
        x: FloatTensor<Self>,
        at: FloatTensor<Self>,
        b: FloatTensor<Self>,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        lora::forward_composed::<Self>(base, x, at, b, scale)
    }

    fn lora_project_add(
        dest: FloatTensor<Self>,
        lhs: FloatTensor<Self>,
        rhs: FloatTensor<Self>,
        scale: f32,
        place: Placement,
    ) -> FloatTensor<Self> {
        lora::project_add::<Self>(dest, lhs, rhs, scale, place)
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
        lora::backward_b::<Self>(g, gt, b, u, db, scale, place)
    }

    fn lora_backward_a(
        xt: FloatTensor<Self>,
        du: FloatTensor<Self>,
        at: FloatTensor<Self>,
        da: FloatTensor<Self>,
        dx: FloatTensor<Self>,
        place: Placement,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        lora::backward_a::<Self>(xt, du, at, da, dx, place)
    }

    fn adamw_update(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        moments: FloatTensor<Self>,
        norm: FloatTensor<Self>,
        scalars: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (param, moments) =
            adamw::update_composed(wrap(param), wrap(grad), wrap(moments), wrap(norm), wrap(scalars));
        (unwrap(param), unwrap(moments))
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
        let parts = [a, b, c, d, e, f].into_iter().take(count as usize).map(wrap).collect();
        unwrap(gather::into_composed(wrap(dest), parts, offset as usize, partials_at as usize))
    }

    fn sqrt_of_sum(buffer: FloatTensor<Self>, from: u32) -> FloatTensor<Self> {
        unwrap(gather::norm_composed(wrap(buffer), from as usize))
    }

    fn copy_into(_dest: FloatTensor<Self>, src: FloatTensor<Self>) -> FloatTensor<Self> {
        src
    }

    fn cross_entropy_chunk(
        logits: FloatTensor<Self>,
        targets: FloatTensor<Self>,
        state: FloatTensor<Self>,
        start: u32,
        first: bool,
    ) -> FloatTensor<Self> {
        unwrap(cross_entropy::chunk_forward_composed(wrap(logits), wrap(targets), wrap(state), start, first))
    }

    fn cross_entropy_chunk_backward(
        logits: FloatTensor<Self>,
        targets: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        upstream: FloatTensor<Self>,
        start: u32,
    ) -> FloatTensor<Self> {
        unwrap(cross_entropy::chunk_backward_composed(wrap(logits), wrap(targets), wrap(lse), wrap(upstream), start))
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
        let (out, lse) = attention::composed(wrap(q), wrap(k), wrap(v), wrap(aux), scale, window, rope);
        let (out_size, lse_size) = (out.shape().num_elements(), lse.shape().num_elements());
        unwrap(Tensor::cat(vec![out.reshape([out_size]), lse.reshape([lse_size])], 0))
    }

    fn attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        aux: FloatTensor<Self>,
        _saved: FloatTensor<Self>,
        dout: FloatTensor<Self>,
        scale: f32,
        window: u32,
        rope: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        // The composed forward again, differentiated by burn's autodiff.
        let [q, k, v]: [Tensor<4>; 3] = [q, k, v].map(|t| wrap::<4>(t).autodiff().require_grad());
        let (out, _) =
            attention::composed(q.clone(), k.clone(), v.clone(), wrap::<1>(aux).autodiff(), scale, window, rope);
        let grads = (out * wrap::<4>(dout).autodiff()).sum().backward();
        let grad = |t: &Tensor<4>| unwrap(t.grad(&grads).expect("attention inputs get gradients"));
        (grad(&q), grad(&k), grad(&v))
    }
}

impl super::FusedOps for Flex {
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
