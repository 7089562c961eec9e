//! `x · W` for a frozen weight `W` stored in f16 or f32, computed in `x`'s f32. On the GPU one
//! matmul kernel reads the f16 weight and widens it as it loads its tiles (burn's matmul binds
//! both inputs at one type, so it would first cast the whole weight to f32: one more kernel, and
//! an f32 copy of the weight, per use). The backward pass keeps the stored weight, which lives
//! anyway, instead of an f32 cast that burn's matmul would hold for every layer until the step
//! ends. Only `x` gets a gradient: the weight is frozen. Reference: `x.matmul(to_f32(W))`
//! (transposed as asked).

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, TensorMetadata};
use burn_cubecl::CubeBackend;
use burn_cubecl::tensor::CubeTensor;
use cubek::matmul::definition::{MatmulElems, MatmulGlobalElems};
use cubek::matmul::strategy::Strategy;
use cubek::std::InputBinding;

use super::FusedKernels;
use super::cube::Launch;

/// The weight as the product uses it, `[in, out]`: `weight` is `[out, in]` when `transposed` (an
/// `nn.Linear`), `[in, out]` otherwise (GPT-2's Conv1D). A view, no copy.
fn in_out<B: Backend>(weight: FloatTensor<B>, transposed: bool) -> FloatTensor<B> {
    if transposed { B::float_transpose(weight) } else { weight }
}

/// `x [n, in] · W` → `[n, out]` in composed ops: the weight cast to `x`'s type, then multiplied.
pub(super) fn forward<B: Backend>(x: FloatTensor<B>, weight: FloatTensor<B>, transposed: bool) -> FloatTensor<B> {
    let weight = if weight.dtype() != x.dtype() { B::float_cast(weight, x.dtype().into()) } else { weight };
    B::float_matmul(x, in_out::<B>(weight, transposed))
}

/// [`forward`] as one matmul kernel: an f16 weight is widened to `x`'s type where its tiles are
/// loaded (stage and registers at `x`'s type), so the product is the f32 one.
pub(super) fn forward_cube(x: CubeTensor, weight: CubeTensor, transposed: bool) -> CubeTensor {
    if x.dtype == weight.dtype {
        return forward::<CubeBackend>(x, weight, transposed);
    }
    let weight = in_out::<CubeBackend>(weight, transposed);
    let launch = Launch::new(&x);
    let [n, _] = launch.dims::<2>(&x);
    let [_, out_features] = launch.dims::<2>(&weight);
    let out = launch.empty([n, out_features]);
    let (x_type, weight_type) = (launch.elem(), dtype_to_storage_type(weight.dtype));
    let mut elems = MatmulElems::from_globals(&MatmulGlobalElems { lhs: x_type, rhs: weight_type, out: x_type });
    elems.rhs_stage = elems.lhs_stage;
    elems.rhs_register = elems.lhs_register;
    cubek::matmul::launch::launch_ref(
        &Strategy::default(),
        &launch.client,
        InputBinding::new(x.binding(), x_type),
        InputBinding::new(weight.binding(), weight_type),
        out.clone().binding(),
        &mut elems,
    )
    .unwrap_or_else(|e| panic!("no matmul kernel for an f32 input and an f16 frozen weight: {e:?}"));
    out
}

#[derive(Debug)]
struct FrozenMatmulBackward;

impl<B: FusedKernels> Backward<B, 1> for FrozenMatmulBackward {
    /// The stored weight and whether it is `[out, in]`.
    type State = (FloatTensor<B>, bool);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (weight, transposed) = ops.state;
        if let Some(node) = node_x {
            // dx = dy · Wᵀ with W `[in, out]`: the stored weight read the other way round.
            grads.register::<B>(node.id, B::frozen_matmul_forward(dy, weight, !transposed));
        }
    }
}

pub(super) fn autodiff<B: FusedKernels, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
    transposed: bool,
) -> FloatTensor<Autodiff<B, C>> {
    match FrozenMatmulBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let weight = weight.into_primitive();
            let y = B::frozen_matmul_forward(x.into_primitive(), weight.clone(), transposed);
            prep.finish((weight, transposed), y)
        }
        OpsKind::UnTracked(prep) => {
            prep.finish(B::frozen_matmul_forward(x.into_primitive(), weight.into_primitive(), transposed))
        }
    }
}
