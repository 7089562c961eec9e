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
//! tests compare against it) is named in its doc comment.

mod adamw;
mod cube;
mod glu;
mod rms_norm;

pub use adamw::AdamWStep;

use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::fusion::custom::TensorSpec;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Cube, Dispatch, backend_extension};
use burn::tensor::{Shape, Tensor};
use burn_cubecl::CubeBackend;

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
    /// `dx = r · (g − x · r² · mean(g · x))` with `g = dy · (offset + weight)`.
    #[fusion(meta = |x, _weight, _inv_rms, _dy, _offset| x.clone())]
    fn rms_norm_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        inv_rms: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        offset: f32,
    ) -> FloatTensor<Self>;

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

    /// One AdamW update of flat `param [n]` with `grad [n]` and `moments [2, n]` (m, then v),
    /// the gradient clipped by its global `norm [1]`: returns `[3, n]` (param, m, v).
    #[fusion(meta = |param, _grad, _moments, _norm, _step| TensorSpec::new(Shape::new([3, param.shape[0]]), param.dtype))]
    fn adamw_update(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        moments: FloatTensor<Self>,
        norm: FloatTensor<Self>,
        step: AdamWStep,
    ) -> FloatTensor<Self>;
}

/// The differentiable fused operations.
#[backend_extension(Cube, Flex: cfg(not(target_arch = "wasm32")), Autodiff)]
pub trait FusedOps: Backend {
    /// See [`rms_norm`].
    fn fused_rms_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, eps: f32, offset: f32) -> FloatTensor<Self>;

    /// See [`glu`].
    fn fused_glu(gate: FloatTensor<Self>, up: FloatTensor<Self>, act: u32) -> FloatTensor<Self>;
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

/// One AdamW update of every trainable value, laid end to end in `param [n]` and `grad [n]`, with
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
        offset: f32,
    ) -> FloatTensor<Self> {
        rms_norm::backward_cube(x, weight, inv_rms, dy, offset)
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

    fn adamw_update(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        moments: FloatTensor<Self>,
        norm: FloatTensor<Self>,
        step: AdamWStep,
    ) -> FloatTensor<Self> {
        adamw::update_cube(param, grad, moments, norm, step)
    }
}

/// The CPU backend runs the composed-ops formulation: on a CPU each op is a loop, and a launch
/// costs nothing.
#[cfg(not(target_arch = "wasm32"))]
mod flex {
    use burn::backend::Flex;
    use burn::backend::tensor::FloatTensor;
    use burn::tensor::Tensor;

    use super::{AdamWStep, FusedKernels, adamw, glu, rms_norm};

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
            offset: f32,
        ) -> FloatTensor<Self> {
            unwrap(rms_norm::backward_composed(wrap(x), wrap(weight), wrap(inv_rms), wrap(dy), offset))
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

        fn adamw_update(
            param: FloatTensor<Self>,
            grad: FloatTensor<Self>,
            moments: FloatTensor<Self>,
            norm: FloatTensor<Self>,
            step: AdamWStep,
        ) -> FloatTensor<Self> {
            unwrap(adamw::update_composed(wrap(param), wrap(grad), wrap(moments), wrap(norm), step))
        }
    }

    impl super::FusedOps for Flex {
        fn fused_rms_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, eps: f32, offset: f32) -> FloatTensor<Self> {
            Self::rms_norm_forward(x, weight, eps, offset).0
        }

        fn fused_glu(gate: FloatTensor<Self>, up: FloatTensor<Self>, act: u32) -> FloatTensor<Self> {
            Self::glu_forward(gate, up, act)
        }
    }
}

impl FusedOps for Cube {
    fn fused_rms_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, eps: f32, offset: f32) -> FloatTensor<Self> {
        Self::rms_norm_forward(x, weight, eps, offset).0
    }

    fn fused_glu(gate: FloatTensor<Self>, up: FloatTensor<Self>, act: u32) -> FloatTensor<Self> {
        Self::glu_forward(gate, up, act)
    }
}

impl<B: FusedKernels, C: CheckpointStrategy> FusedOps for Autodiff<B, C> {
    fn fused_rms_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, eps: f32, offset: f32) -> FloatTensor<Self> {
        rms_norm::autodiff::<B, C>(x, weight, eps, offset)
    }

    fn fused_glu(gate: FloatTensor<Self>, up: FloatTensor<Self>, act: u32) -> FloatTensor<Self> {
        glu::autodiff::<B, C>(gate, up, act)
    }
}
