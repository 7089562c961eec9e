//! `x · W` for a frozen weight `W` stored in f16: the product is computed in f32 (W cast where it
//! is used, as `model::layers` does), but the backward pass keeps the stored f16 weight, which
//! lives anyway, and casts it again, instead of keeping the f32 cast that burn's matmul would hold
//! for every layer until the step ends (twice the stored weight's memory). Only `x` gets a
//! gradient: the weight is frozen. Reference: `x.matmul(to_f32(W))` (transposed as asked).

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, TensorMetadata};

/// The weight as the product uses it, `[in, out]` in `x`'s float type: `weight` is `[out, in]`
/// when `transposed` (an `nn.Linear`), `[in, out]` otherwise (GPT-2's Conv1D).
fn weight_in_out<B: Backend>(weight: FloatTensor<B>, like: &FloatTensor<B>, transposed: bool) -> FloatTensor<B> {
    let weight = if weight.dtype() != like.dtype() { B::float_cast(weight, like.dtype().into()) } else { weight };
    if transposed { B::float_transpose(weight) } else { weight }
}

/// `x [n, in] · W` → `[n, out]`.
pub(super) fn forward<B: Backend>(x: FloatTensor<B>, weight: FloatTensor<B>, transposed: bool) -> FloatTensor<B> {
    let weight = weight_in_out::<B>(weight, &x, transposed);
    B::float_matmul(x, weight)
}

#[derive(Debug)]
struct FrozenMatmulBackward;

impl<B: Backend> Backward<B, 1> for FrozenMatmulBackward {
    /// The stored weight and whether it is `[out, in]`.
    type State = (FloatTensor<B>, bool);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (weight, transposed) = ops.state;
        if let Some(node) = node_x {
            // dx = dy · Wᵀ with W `[in, out]`.
            let weight = weight_in_out::<B>(weight, &dy, transposed);
            grads.register::<B>(node.id, B::float_matmul(dy, B::float_transpose(weight)));
        }
    }
}

pub(super) fn autodiff<B: Backend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
    transposed: bool,
) -> FloatTensor<Autodiff<B, C>> {
    match FrozenMatmulBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let weight = weight.into_primitive();
            let y = forward::<B>(x.into_primitive(), weight.clone(), transposed);
            prep.finish((weight, transposed), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward::<B>(x.into_primitive(), weight.into_primitive(), transposed)),
    }
}
