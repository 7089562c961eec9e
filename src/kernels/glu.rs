//! Gated MLP activations, `act(gate) · up` (SwiGLU with SiLU, GeGLU with either GELU): one
//! elementwise kernel forward and one backward (both input gradients at once). Gate and up come
//! as two tensors, or packed as one `[rows, 2·w]` (each row's gate, then its up: the product of
//! the packed `gate_proj` and `up_proj` weights), whose gradient is then one tensor too.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::tensor::Tensor as BurnTensor;
use burn::tensor::activation;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use super::FusedKernels;
use super::cube::{Launch, MAX_THREADS, grid_thread, row_grid};
use crate::model::config::Activation;

/// The activation as a kernel constant.
pub(super) fn code(activation: Activation) -> u32 {
    match activation {
        Activation::Silu => 0,
        Activation::GeluTanh => 1,
        Activation::GeluErf => 2,
    }
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_CUBIC: f32 = 0.044_715;

/// `tanh` of an argument clamped to ±15, where it is ±1 in f32 anyway: some GPU `tanh`s are
/// `(e²ˣ − 1)/(e²ˣ + 1)` and give NaN for large arguments.
#[cube]
fn tanh_clamped<F: Float>(x: F) -> F {
    F::tanh(F::clamp(x, F::new(-15.0), F::new(15.0)))
}

/// `act(x)` and `act'(x)`.
#[cube]
fn activate<F: Float>(x: F, #[comptime] act: u32) -> (F, F) {
    let one = F::new(1.0);
    let half = F::new(0.5);
    if comptime![act == 0] {
        let s = one / (one + F::exp(-x));
        (x * s, s * (one + x * (one - s)))
    } else if comptime![act == 1] {
        let c = F::new(SQRT_2_OVER_PI);
        let a = F::new(GELU_CUBIC);
        let t = tanh_clamped::<F>(c * (x + a * x * x * x));
        let grad = half * (one + t) + half * x * (one - t * t) * c * (one + F::new(3.0) * a * x * x);
        (half * x * (one + t), grad)
    } else {
        let cdf = half * (one + F::erf(x * F::new(core::f32::consts::FRAC_1_SQRT_2)));
        let pdf = F::exp(F::new(-0.5) * x * x) * F::new(0.398_942_3);
        (x * cdf, cdf + x * pdf)
    }
}

#[cube(launch)]
fn forward_kernel<F: Float>(
    gate: &Tensor<F>,
    up: &Tensor<F>,
    out: &mut Tensor<F>,
    #[comptime] act: u32,
    #[define(F)] _dtype: ElemType,
) {
    let i = grid_thread();
    if i < out.len() {
        let (value, _) = activate::<F>(gate[i], act);
        out[i] = value * up[i];
    }
}

#[cube(launch)]
fn backward_kernel<F: Float>(
    gate: &Tensor<F>,
    up: &Tensor<F>,
    dout: &Tensor<F>,
    dgate: &mut Tensor<F>,
    dup: &mut Tensor<F>,
    #[comptime] act: u32,
    #[define(F)] _dtype: ElemType,
) {
    let i = grid_thread();
    if i < dgate.len() {
        let (value, grad) = activate::<F>(gate[i], act);
        let g = dout[i];
        dgate[i] = g * up[i] * grad;
        dup[i] = g * value;
    }
}

/// [`forward_kernel`] on `gate_up [rows, 2·w]`: `out [rows, w]`.
#[cube(launch)]
fn packed_forward_kernel<F: Float>(
    gate_up: &Tensor<F>,
    out: &mut Tensor<F>,
    #[comptime] act: u32,
    #[define(F)] _dtype: ElemType,
) {
    let i = grid_thread();
    if i < out.len() {
        let w = out.shape(1);
        let at = (i / w) * 2 * w + i % w;
        let (value, _) = activate::<F>(gate_up[at], act);
        out[i] = value * gate_up[at + w];
    }
}

/// [`backward_kernel`] on `gate_up [rows, 2·w]`: `d_gate_up` in the same layout.
#[cube(launch)]
fn packed_backward_kernel<F: Float>(
    gate_up: &Tensor<F>,
    dout: &Tensor<F>,
    d_gate_up: &mut Tensor<F>,
    #[comptime] act: u32,
    #[define(F)] _dtype: ElemType,
) {
    let i = grid_thread();
    if i < dout.len() {
        let w = dout.shape(1);
        let at = (i / w) * 2 * w + i % w;
        let (value, grad) = activate::<F>(gate_up[at], act);
        let g = dout[i];
        d_gate_up[at] = g * gate_up[at + w] * grad;
        d_gate_up[at + w] = g * value;
    }
}

pub(super) fn forward_cube(gate: CubeTensor, up: CubeTensor, act: u32) -> CubeTensor {
    let launch = Launch::new(&gate);
    let (gate, up) = (launch.contiguous(gate), launch.contiguous(up));
    let shape = launch.dims::<2>(&gate);
    let out = launch.empty(shape);
    forward_kernel::launch(
        &launch.client,
        row_grid((shape[0] * shape[1]).div_ceil(MAX_THREADS)),
        CubeDim::new_1d(MAX_THREADS as u32),
        gate.into_tensor_arg(),
        up.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        act,
        launch.elem(),
    );
    out
}

pub(super) fn backward_cube(gate: CubeTensor, up: CubeTensor, dout: CubeTensor, act: u32) -> (CubeTensor, CubeTensor) {
    let launch = Launch::new(&gate);
    let [gate, up, dout] = [gate, up, dout].map(|t| launch.contiguous(t));
    let shape = launch.dims::<2>(&gate);
    let (dgate, dup) = (launch.empty(shape), launch.empty(shape));
    backward_kernel::launch(
        &launch.client,
        row_grid((shape[0] * shape[1]).div_ceil(MAX_THREADS)),
        CubeDim::new_1d(MAX_THREADS as u32),
        gate.into_tensor_arg(),
        up.into_tensor_arg(),
        dout.into_tensor_arg(),
        dgate.clone().into_tensor_arg(),
        dup.clone().into_tensor_arg(),
        act,
        launch.elem(),
    );
    (dgate, dup)
}

pub(super) fn packed_forward_cube(gate_up: CubeTensor, act: u32) -> CubeTensor {
    let launch = Launch::new(&gate_up);
    let gate_up = launch.contiguous(gate_up);
    let [rows, packed] = launch.dims::<2>(&gate_up);
    let out = launch.empty([rows, packed / 2]);
    packed_forward_kernel::launch(
        &launch.client,
        row_grid((rows * packed / 2).div_ceil(MAX_THREADS)),
        CubeDim::new_1d(MAX_THREADS as u32),
        gate_up.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        act,
        launch.elem(),
    );
    out
}

pub(super) fn packed_backward_cube(gate_up: CubeTensor, dout: CubeTensor, act: u32) -> CubeTensor {
    let launch = Launch::new(&gate_up);
    let (gate_up, dout) = (launch.contiguous(gate_up), launch.contiguous(dout));
    let [rows, width] = launch.dims::<2>(&dout);
    let d_gate_up = launch.empty([rows, 2 * width]);
    packed_backward_kernel::launch(
        &launch.client,
        row_grid((rows * width).div_ceil(MAX_THREADS)),
        CubeDim::new_1d(MAX_THREADS as u32),
        gate_up.into_tensor_arg(),
        dout.into_tensor_arg(),
        d_gate_up.clone().into_tensor_arg(),
        act,
        launch.elem(),
    );
    d_gate_up
}

#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
fn activation_of(act: u32) -> Activation {
    match act {
        0 => Activation::Silu,
        1 => Activation::GeluTanh,
        _ => Activation::GeluErf,
    }
}

/// The same computation in composed tensor ops (the CPU backend's implementation).
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(super) fn forward_composed(gate: BurnTensor<2>, up: BurnTensor<2>, act: u32) -> BurnTensor<2> {
    crate::model::layers::activate(gate, activation_of(act)) * up
}

#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(super) fn backward_composed(
    gate: BurnTensor<2>,
    up: BurnTensor<2>,
    dout: BurnTensor<2>,
    act: u32,
) -> (BurnTensor<2>, BurnTensor<2>) {
    let x = gate;
    let derivative = match activation_of(act) {
        Activation::Silu => {
            let s = activation::sigmoid(x.clone());
            s.clone() * (x.clone() * (s.neg() + 1.0) + 1.0)
        }
        Activation::GeluTanh => {
            let (c, a) = (SQRT_2_OVER_PI as f64, GELU_CUBIC as f64);
            let t = ((x.clone() + x.clone().powi_scalar(3) * a) * c).clamp(-15.0, 15.0).tanh();
            (t.clone() + 1.0) * 0.5
                + x.clone() * (t.clone() * t).neg().add_scalar(1.0) * (x.clone().square() * (3.0 * a) + 1.0) * (0.5 * c)
        }
        Activation::GeluErf => {
            let cdf = ((x.clone() * core::f64::consts::FRAC_1_SQRT_2).erf() + 1.0) * 0.5;
            let pdf = (x.clone().square() * -0.5).exp() * 0.398_942_280_401_432_7;
            cdf + x.clone() * pdf
        }
    };
    let value = crate::model::layers::activate(x, activation_of(act));
    (dout.clone() * up * derivative, dout * value)
}

/// The packed layout's halves, `(gate, up)`.
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
fn halves(gate_up: BurnTensor<2>) -> (BurnTensor<2>, BurnTensor<2>) {
    let [rows, packed] = gate_up.dims();
    let w = packed / 2;
    (gate_up.clone().slice([0..rows, 0..w]), gate_up.slice([0..rows, w..packed]))
}

#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(super) fn packed_forward_composed(gate_up: BurnTensor<2>, act: u32) -> BurnTensor<2> {
    let (gate, up) = halves(gate_up);
    forward_composed(gate, up, act)
}

#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(super) fn packed_backward_composed(gate_up: BurnTensor<2>, dout: BurnTensor<2>, act: u32) -> BurnTensor<2> {
    let (gate, up) = halves(gate_up);
    let (dgate, dup) = backward_composed(gate, up, dout, act);
    BurnTensor::cat(vec![dgate, dup], 1)
}

#[derive(Debug)]
struct GluBackward;

impl<B: FusedKernels> Backward<B, 2> for GluBackward {
    /// `gate`, `up` and the activation.
    type State = (FloatTensor<B>, FloatTensor<B>, u32);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_gate, node_up] = ops.parents;
        let dout = grads.consume::<B>(&ops.node);
        let (gate, up, act) = ops.state;
        let (dgate, dup) = B::glu_backward(gate, up, dout, act);
        if let Some(node) = node_gate {
            grads.register::<B>(node.id, dgate);
        }
        if let Some(node) = node_up {
            grads.register::<B>(node.id, dup);
        }
    }
}

pub(super) fn autodiff<B: FusedKernels, C: CheckpointStrategy>(
    gate: FloatTensor<Autodiff<B, C>>,
    up: FloatTensor<Autodiff<B, C>>,
    act: u32,
) -> FloatTensor<Autodiff<B, C>> {
    match GluBackward.prepare::<C>([gate.node(), up.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let (gate, up) = (gate.into_primitive(), up.into_primitive());
            let out = B::glu_forward(gate.clone(), up.clone(), act);
            prep.finish((gate, up, act), out)
        }
        OpsKind::UnTracked(prep) => prep.finish(B::glu_forward(gate.into_primitive(), up.into_primitive(), act)),
    }
}

#[derive(Debug)]
struct PackedGluBackward;

impl<B: FusedKernels> Backward<B, 1> for PackedGluBackward {
    /// `gate_up` and the activation.
    type State = (FloatTensor<B>, u32);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let dout = grads.consume::<B>(&ops.node);
        let (gate_up, act) = ops.state;
        if let Some(node) = node {
            grads.register::<B>(node.id, B::glu_packed_backward(gate_up, dout, act));
        }
    }
}

pub(super) fn packed_autodiff<B: FusedKernels, C: CheckpointStrategy>(
    gate_up: FloatTensor<Autodiff<B, C>>,
    act: u32,
) -> FloatTensor<Autodiff<B, C>> {
    match PackedGluBackward.prepare::<C>([gate_up.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let gate_up = gate_up.into_primitive();
            let out = B::glu_packed_forward(gate_up.clone(), act);
            prep.finish((gate_up, act), out)
        }
        OpsKind::UnTracked(prep) => prep.finish(B::glu_packed_forward(gate_up.into_primitive(), act)),
    }
}
