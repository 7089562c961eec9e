//! Many tensors end to end in one flat buffer, [`GATHER_INPUTS`] per dispatch, where burn's `cat`
//! launches one copy per tensor (and one more per tensor that is not contiguous): the optimizer's
//! gradients (one per adapter tensor, 8 per layer for LoRA on q/k/v/o) cost `⌈k / 6⌉` dispatches
//! instead of up to `2k`. The same pass sums each workgroup's squares, so their global L2 norm
//! (torch's `clip_grad_norm_`) costs one more dispatch rather than burn's four.
//!
//! Layout of the buffer: `[values (n) | partial sums of squares (one per workgroup of 256 values)]`.
//! Each dispatch writes its inputs into it in place from `offset` on, and its workgroups' sums
//! from `partials_at` on: the buffer, six inputs and CubeCL's info buffer (shapes, strides and
//! scalars) are WebGPU's default of eight storage buffers per shader stage. Inputs are read through
//! their strides, so a transposed view (as autodiff leaves some LoRA gradients) costs no copy.

use burn::tensor::Tensor as BurnTensor;
use burn::tensor::s;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use super::cube::{Launch, MAX_THREADS, grid_row, grid_thread, row_grid, workgroup_sum};

/// Inputs one dispatch copies.
pub const GATHER_INPUTS: usize = 6;

/// Values per partial sum of squares (one workgroup's).
const SQUARES_BLOCK: usize = MAX_THREADS;

/// Thread `i` of the inputs laid end to end copies element `i − start` of `src [rows, cols]`
/// (row-major order, read through its strides) to `out[offset + i]` when it falls within `src`;
/// returns the value copied, 0 for a thread of another input.
#[cube]
fn copy_slot<F: Float>(src: &Tensor<F>, out: &mut Tensor<F>, i: usize, start: usize, offset: usize) -> F {
    let cols = src.shape(1);
    let mut value = F::new(0.0);
    if i >= start && i < start + src.shape(0) * cols {
        let j = i - start;
        value = src[(j / cols) * src.stride(0) + (j % cols) * src.stride(1)];
        out[offset + i] = value;
    }
    value
}

/// One thread per element of the first `count` inputs laid end to end; workgroup `w` writes the
/// sum of its elements' squares to `out[partials_at + w]`.
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
    partials_at: u32,
    #[define(F)] _dtype: ElemType,
) {
    let block = grid_row();
    let unit = UNIT_POS as usize;
    let i = block * CUBE_DIM_X as usize + unit;
    let offset = offset as usize;
    let mut start = 0usize;
    let mut square = F::new(0.0);
    let v = copy_slot::<F>(a, out, i, start, offset);
    square += v * v;
    start += a.shape(0) * a.shape(1);
    if count > 1 {
        let v = copy_slot::<F>(b, out, i, start, offset);
        square += v * v;
        start += b.shape(0) * b.shape(1);
    }
    if count > 2 {
        let v = copy_slot::<F>(c, out, i, start, offset);
        square += v * v;
        start += c.shape(0) * c.shape(1);
    }
    if count > 3 {
        let v = copy_slot::<F>(d, out, i, start, offset);
        square += v * v;
        start += d.shape(0) * d.shape(1);
    }
    if count > 4 {
        let v = copy_slot::<F>(e, out, i, start, offset);
        square += v * v;
        start += e.shape(0) * e.shape(1);
    }
    if count > 5 {
        let v = copy_slot::<F>(f, out, i, start, offset);
        square += v * v;
        start += f.shape(0) * f.shape(1);
    }
    let mut partial = Shared::<[F]>::new_slice(SQUARES_BLOCK);
    partial[unit] = square;
    workgroup_sum::<F>(&mut partial, SQUARES_BLOCK);
    // A grid wider than 65,535 workgroups is rounded up to whole rows: those past the end write
    // nothing (the next dispatch's sums follow).
    if unit == 0 && block * (CUBE_DIM_X as usize) < start {
        out[partials_at as usize + block] = partial[0];
    }
}

/// `out[0] = √(Σ buffer[from..])`: one workgroup.
#[cube(launch)]
fn norm_kernel<F: Float>(buffer: &Tensor<F>, out: &mut Tensor<F>, from: u32, #[define(F)] _dtype: ElemType) {
    let unit = UNIT_POS as usize;
    let mut sum = F::new(0.0);
    let mut j = from as usize + unit;
    while j < buffer.shape(0) {
        sum += buffer[j];
        j += SQUARES_BLOCK;
    }
    let mut partial = Shared::<[F]>::new_slice(SQUARES_BLOCK);
    partial[unit] = sum;
    workgroup_sum::<F>(&mut partial, SQUARES_BLOCK);
    if unit == 0 {
        out[0] = F::sqrt(partial[0]);
    }
}

/// Workgroups (partial sums) of a dispatch copying `elements` values.
pub(super) fn blocks(elements: usize) -> usize {
    elements.div_ceil(SQUARES_BLOCK)
}

/// Copies `parts[..count]` (`[rows, cols]` each, in row-major order, any strides) into `dest`
/// from `offset` on, their workgroups' sums of squares from `partials_at` on. `dest` is written
/// in place when nothing else holds it (copied first otherwise).
pub(super) fn into_cube(
    dest: CubeTensor,
    parts: [CubeTensor; GATHER_INPUTS],
    offset: u32,
    count: u32,
    partials_at: u32,
) -> CubeTensor {
    let launch = Launch::new(&dest);
    let dest = if dest.can_mut() && dest.is_contiguous() { dest } else { dest.copy() };
    let used: Vec<CubeTensor> = parts.into_iter().take(count as usize).collect();
    let elements: usize = used.iter().map(|t| t.meta.shape().num_elements()).sum();
    // The slots past `count` are bound but never read: the first input fills them.
    let [a, b, c, d, e, f] = std::array::from_fn(|i| used.get(i).unwrap_or(&used[0]).clone());
    gather_kernel::launch(
        &launch.client,
        row_grid(blocks(elements)),
        CubeDim::new_1d(SQUARES_BLOCK as u32),
        dest.clone().into_tensor_arg(),
        a.into_tensor_arg(),
        b.into_tensor_arg(),
        c.into_tensor_arg(),
        d.into_tensor_arg(),
        e.into_tensor_arg(),
        f.into_tensor_arg(),
        offset,
        count,
        partials_at,
        launch.elem(),
    );
    dest
}

pub(super) fn norm_cube(buffer: CubeTensor, from: u32) -> CubeTensor {
    let launch = Launch::new(&buffer);
    let buffer = launch.contiguous(buffer);
    let out = launch.empty([1]);
    norm_kernel::launch(
        &launch.client,
        CubeCount::Static(1, 1, 1),
        CubeDim::new_1d(SQUARES_BLOCK as u32),
        buffer.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        from,
        launch.elem(),
    );
    out
}

#[cube(launch)]
fn copy_kernel<F: Float>(dest: &mut Tensor<F>, src: &Tensor<F>, #[define(F)] _dtype: ElemType) {
    let i = grid_thread();
    if i < dest.len() {
        dest[i] = src[i];
    }
}

/// `src` copied into `dest` in place (a recorded step's input buffer, rewritten before each
/// replay).
pub(super) fn copy_cube(dest: CubeTensor, src: CubeTensor) -> CubeTensor {
    assert!(dest.is_contiguous(), "a copy in place needs a contiguous destination");
    let launch = Launch::new(&dest);
    let src = launch.contiguous(src);
    let [n] = launch.dims::<1>(&dest);
    copy_kernel::launch(
        &launch.client,
        row_grid(n.div_ceil(MAX_THREADS)),
        CubeDim::new_1d(MAX_THREADS as u32),
        dest.clone().into_tensor_arg(),
        src.into_tensor_arg(),
        launch.elem(),
    );
    dest
}

/// The same in composed tensor ops (the CPU backend's implementation): `cat`, assigned to its
/// range, and the sums of squares of each block of [`SQUARES_BLOCK`] values.
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(super) fn into_composed(
    dest: BurnTensor<1>,
    parts: Vec<BurnTensor<2>>,
    offset: usize,
    partials_at: usize,
) -> BurnTensor<1> {
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
    let n = flat.dims()[0];
    let blocks = blocks(n);
    let padded = match blocks * SQUARES_BLOCK - n {
        0 => flat.clone(),
        padding => BurnTensor::cat(vec![flat.clone(), BurnTensor::zeros([padding], (&flat.device(), flat.dtype()))], 0),
    };
    let squares = padded.reshape([blocks, SQUARES_BLOCK]).square();
    let sums = squares.sum_dim(1).reshape([blocks]);
    dest.slice_assign(s![offset..offset + n], flat).slice_assign(s![partials_at..partials_at + blocks], sums)
}

#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(super) fn norm_composed(buffer: BurnTensor<1>, from: usize) -> BurnTensor<1> {
    let n = buffer.dims()[0];
    buffer.slice(s![from..n]).sum().sqrt()
}
