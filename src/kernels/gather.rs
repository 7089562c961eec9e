//! Many tensors end to end in one flat buffer, [`GATHER_INPUTS`] per dispatch, where burn's `cat`
//! launches one copy per tensor: the optimizer's gradients (one per adapter tensor, 8 per layer for
//! LoRA on q/k/v/o) cost `⌈k / 6⌉` dispatches instead of `k`.
//!
//! Each dispatch writes its inputs into the destination buffer in place, from `offset` on: the
//! destination, six inputs and CubeCL's info buffer (shapes, strides and scalars) are WebGPU's
//! default of eight storage buffers per shader stage. Inputs are read through their strides, so a
//! transposed view (as autodiff leaves some LoRA gradients) costs no copy to make it contiguous.

use burn::tensor::Tensor as BurnTensor;
use burn::tensor::s;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use super::cube::{Launch, MAX_THREADS, row_grid};

/// Inputs one dispatch copies.
pub const GATHER_INPUTS: usize = 6;

/// Thread `i` of the inputs laid end to end copies element `i − start` of `src [rows, cols]`
/// (row-major order, read through its strides) to `out[offset + i]` when it falls within `src`.
#[cube]
fn copy_slot<F: Float>(src: &Tensor<F>, out: &mut Tensor<F>, i: usize, start: usize, offset: usize) {
    let cols = src.shape(1);
    if i >= start && i < start + src.shape(0) * cols {
        let j = i - start;
        out[offset + i] = src[(j / cols) * src.stride(0) + (j % cols) * src.stride(1)];
    }
}

/// One thread per element of the first `count` inputs laid end to end.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn gather_kernel<F: Float>(
    out: &mut Tensor<F>,
    a: &Tensor<F>,
    b: &Tensor<F>,
    c: &Tensor<F>,
    d: &Tensor<F>,
    e: &Tensor<F>,
    f: &Tensor<F>,
    offset: u32,
    count: u32,
    #[define(F)] _dtype: ElemType,
) {
    let i =
        (CUBE_POS_Y as usize * CUBE_COUNT_X as usize + CUBE_POS_X as usize) * CUBE_DIM_X as usize + UNIT_POS as usize;
    let offset = offset as usize;
    let mut start = 0usize;
    copy_slot::<F>(a, out, i, start, offset);
    start += a.shape(0) * a.shape(1);
    if count > 1 {
        copy_slot::<F>(b, out, i, start, offset);
        start += b.shape(0) * b.shape(1);
    }
    if count > 2 {
        copy_slot::<F>(c, out, i, start, offset);
        start += c.shape(0) * c.shape(1);
    }
    if count > 3 {
        copy_slot::<F>(d, out, i, start, offset);
        start += d.shape(0) * d.shape(1);
    }
    if count > 4 {
        copy_slot::<F>(e, out, i, start, offset);
        start += e.shape(0) * e.shape(1);
    }
    if count > 5 {
        copy_slot::<F>(f, out, i, start, offset);
    }
}

/// Copies `parts[..count]` (`[rows, cols]` each, in row-major order, any strides) into `dest [n]`
/// from `offset` on. `dest` is written in place when nothing else holds it (copied first otherwise).
pub(super) fn into_cube(dest: CubeTensor, parts: [CubeTensor; GATHER_INPUTS], offset: u32, count: u32) -> CubeTensor {
    let launch = Launch::new(&dest);
    let dest = if dest.can_mut() && dest.is_contiguous() { dest } else { dest.copy() };
    let used: Vec<CubeTensor> = parts.into_iter().take(count as usize).collect();
    let elements: usize = used.iter().map(|t| t.meta.shape().num_elements()).sum();
    // The slots past `count` are bound but never read: the first input fills them.
    let [a, b, c, d, e, f] = std::array::from_fn(|i| used.get(i).unwrap_or(&used[0]).clone());
    gather_kernel::launch(
        &launch.client,
        row_grid(elements.div_ceil(MAX_THREADS)),
        CubeDim::new_1d(MAX_THREADS as u32),
        dest.clone().into_tensor_arg(),
        a.into_tensor_arg(),
        b.into_tensor_arg(),
        c.into_tensor_arg(),
        d.into_tensor_arg(),
        e.into_tensor_arg(),
        f.into_tensor_arg(),
        offset,
        count,
        launch.elem(),
    );
    dest
}

/// The same in composed tensor ops (the CPU backend's implementation): `cat`, assigned to its range.
pub(super) fn into_composed(dest: BurnTensor<1>, parts: Vec<BurnTensor<2>>, offset: usize) -> BurnTensor<1> {
    let flat = BurnTensor::cat(
        parts
            .into_iter()
            .map(|t| {
                let n = t.shape().num_elements();
                t.reshape([n])
            })
            .collect(),
        0,
    );
    let end = offset + flat.dims()[0];
    dest.slice_assign(s![offset..end], flat)
}
