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

mod cube;
mod rms_norm;

use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::fusion::custom::TensorSpec;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Cube, Dispatch, backend_extension};
use burn::tensor::{Shape, Tensor};
use burn_cubecl::CubeBackend;

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
}

/// The differentiable fused operations.
#[backend_extension(Cube, Flex: cfg(not(target_arch = "wasm32")), Autodiff)]
pub trait FusedOps: Backend {
    /// See [`rms_norm`].
    fn fused_rms_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, eps: f32, offset: f32) -> FloatTensor<Self>;
}

/// RMSNorm over the last dimension of `x [rows, d]` with `weight [d]`: Llama's
/// `x / sqrt(mean(x²) + eps) · weight` (`offset` 0) or Gemma's `… · (1 + weight)` (`offset` 1).
/// Reference: `model::layers::RmsNorm::forward`.
pub fn rms_norm(x: Tensor<2>, weight: Tensor<1>, eps: f64, offset: f32) -> Tensor<2> {
    Tensor::from_dispatch(Dispatch::fused_rms_norm(x.into_dispatch(), weight.into_dispatch(), eps as f32, offset))
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
}

/// The CPU backend runs the composed-ops formulation: on a CPU each op is a loop, and a launch
/// costs nothing.
#[cfg(not(target_arch = "wasm32"))]
mod flex {
    use burn::backend::Flex;
    use burn::backend::tensor::FloatTensor;
    use burn::tensor::Tensor;

    use super::{FusedKernels, rms_norm};

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
    }

    impl super::FusedOps for Flex {
        fn fused_rms_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, eps: f32, offset: f32) -> FloatTensor<Self> {
            Self::rms_norm_forward(x, weight, eps, offset).0
        }
    }
}

impl FusedOps for Cube {
    fn fused_rms_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, eps: f32, offset: f32) -> FloatTensor<Self> {
        Self::rms_norm_forward(x, weight, eps, offset).0
    }
}

impl<B: FusedKernels, C: CheckpointStrategy> FusedOps for Autodiff<B, C> {
    fn fused_rms_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, eps: f32, offset: f32) -> FloatTensor<Self> {
        rms_norm::autodiff::<B, C>(x, weight, eps, offset)
    }
}
