//! The fused kernels (`webtune::kernels`) against the composed tensor ops they replace: outputs and
//! gradients within 1e-4 relative to their size (`assert_gradient_close`: elementwise
//! `|d| ≤ 1e-4·max(1, |ref|)` and relative norm 1e-3; NaN fails). Run on the default device (the
//! Flex CPU backend here) and with `WEBTUNE_DEVICE=gpu` (the CubeCL kernels through wgpu, Mesa
//! lavapipe here).

mod common;

use burn::tensor::{Device, Tensor, TensorData};
use common::*;
use webtune::kernels;
use webtune::rng::Rng;

/// Seeded values in `[-scale, scale)`.
fn values<const D: usize>(shape: [usize; D], seed: u64, scale: f32, device: &Device) -> Tensor<D> {
    let mut rng = Rng::new(seed);
    let n = shape.iter().product();
    let data: Vec<f32> = (0..n).map(|_| rng.uniform(-1.0, 1.0) as f32 * scale).collect();
    Tensor::from_data(TensorData::new(data, shape), device)
}

fn tracked<const D: usize>(t: &Tensor<D>) -> Tensor<D> {
    t.clone().autodiff().require_grad()
}

/// Compares two tensors of any rank with the gradient tolerances and prints the errors.
fn close<const D: usize>(what: &str, got: Tensor<D>, expected: Tensor<D>) {
    assert_eq!(got.dims(), expected.dims(), "{what}: shape");
    let e = assert_gradient_close(what, &floats(got), &floats(expected));
    println!("{what}: max scaled error {:.2e}, relative norm {:.2e}", e.max_abs, e.rel_norm);
}

/// `x / sqrt(mean(x²) + eps) · (offset + w)`, as `model::layers::RmsNorm` composes it.
fn rms_norm_reference(x: Tensor<2>, w: Tensor<1>, eps: f64, offset: f64) -> Tensor<2> {
    let inv_rms = (x.clone().square().mean_dim(1) + eps).sqrt().recip();
    x * inv_rms * (w + offset).unsqueeze_dim(0)
}

#[test]
fn rms_norm_forward_and_backward_match_composed_ops() {
    let device = gpu();
    for (rows, d, offset) in [(37, 300, 0.0), (130, 64, 1.0), (3, 1000, 0.0)] {
        let x = values([rows, d], 1, 2.0, &device);
        let w = values([d], 2, 1.0, &device);
        let upstream = values([rows, d], 3, 1.0, &device).autodiff();
        let (xf, wf) = (tracked(&x), tracked(&w));
        let fused = kernels::rms_norm(xf.clone(), wf.clone(), 1e-5, offset as f32);
        let grads = (fused.clone() * upstream.clone()).sum().backward();
        let (xr, wr) = (tracked(&x), tracked(&w));
        let reference = rms_norm_reference(xr.clone(), wr.clone(), 1e-5, offset);
        let ref_grads = (reference.clone() * upstream).sum().backward();
        let case = format!("rms_norm {rows}x{d} offset {offset}");
        close(&format!("{case}: y"), fused.inner(), reference.inner());
        close(&format!("{case}: dx"), xf.grad(&grads).unwrap(), xr.grad(&ref_grads).unwrap());
        close(&format!("{case}: dw"), wf.grad(&grads).unwrap(), wr.grad(&ref_grads).unwrap());
    }
}
