//! Launch helpers shared by the CubeCL kernels.

use burn::backend::DType;
use burn::backend::cubecl::dtype_to_storage_type;
use burn::tensor::Shape;
use burn_cubecl::CubeDevice;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::client::Client;
use cubecl::prelude::*;

/// WebGPU's default `maxComputeWorkgroupsPerDimension`.
pub const MAX_GRID: usize = 65_535;

/// `values` rounded up to a whole number of 256 bytes (WebGPU's `minStorageBufferOffsetAlignment`)
/// at f16 and f32: a part of a kernel's packed output that starts and ends such a distance from
/// the buffer's ends is bound as a view, where burn's `slice` would copy it.
pub fn aligned(values: usize) -> usize {
    values.next_multiple_of(128)
}

/// WebGPU's default `maxComputeInvocationsPerWorkgroup`.
pub const MAX_THREADS: usize = 256;

/// The client, device and element type of a launch, taken from its first input.
pub struct Launch {
    pub client: Client,
    device: CubeDevice,
    dtype: DType,
}

impl Launch {
    pub fn new(like: &CubeTensor) -> Self {
        Launch { client: like.client.clone(), device: like.device.clone(), dtype: like.dtype }
    }

    /// `tensor` in row-major order (no copy when it already is).
    pub fn contiguous(&self, tensor: CubeTensor) -> CubeTensor {
        into_contiguous(tensor)
    }

    pub fn dims<const D: usize>(&self, tensor: &CubeTensor) -> [usize; D] {
        tensor.meta.shape().dims::<D>()
    }

    /// A new row-major tensor of the launch's element type.
    pub fn empty<const D: usize>(&self, shape: [usize; D]) -> CubeTensor {
        empty_device_contiguous_dtype(self.client.clone(), self.device.clone(), Shape::new(shape), self.dtype)
    }

    pub fn elem(&self) -> ElemType {
        dtype_to_storage_type(self.dtype)
    }
}

/// A grid of `count` workgroups (numbered by [`grid_row`]), within WebGPU's per-dimension limit.
pub fn row_grid(count: usize) -> CubeCount {
    let x = count.clamp(1, MAX_GRID);
    CubeCount::Static(x as u32, count.div_ceil(x).max(1) as u32, 1)
}

/// The number of this workgroup in a [`row_grid`].
#[cube]
pub fn grid_row() -> usize {
    CUBE_POS_Y as usize * CUBE_COUNT_X as usize + CUBE_POS_X as usize
}

/// The number of this thread in a [`row_grid`] of one-dimensional workgroups.
#[cube]
pub fn grid_thread() -> usize {
    grid_row() * CUBE_DIM_X as usize + UNIT_POS as usize
}

/// Threads of a workgroup reducing rows of `d` elements: a power of two, at most 256.
pub fn threads_for(d: usize) -> usize {
    d.next_power_of_two().clamp(32, MAX_THREADS)
}

/// The maximum of `partial[0..threads]` into `partial[0]`, like [`workgroup_sum`].
#[cube]
pub fn workgroup_max<F: Float>(partial: &mut Shared<[F]>, #[comptime] threads: usize) {
    let unit = UNIT_POS as usize;
    let levels = comptime![threads.trailing_zeros() as usize];
    sync_cube();
    let mut level = 0usize;
    while level < levels {
        let stride = (threads >> 1usize) >> level;
        if unit < stride {
            partial[unit] = F::max(partial[unit], partial[unit + stride]);
        }
        sync_cube();
        level += 1usize;
    }
}

/// Sums `partial[0..threads]` (one value per unit of the workgroup) into `partial[0]`, a tree in
/// workgroup memory (WebGPU has no subgroup operations to lean on). Every unit must call it.
#[cube]
pub fn workgroup_sum<F: Float>(partial: &mut Shared<[F]>, #[comptime] threads: usize) {
    let unit = UNIT_POS as usize;
    let levels = comptime![threads.trailing_zeros() as usize];
    sync_cube();
    let mut level = 0usize;
    while level < levels {
        let stride = (threads >> 1usize) >> level;
        if unit < stride {
            partial[unit] = partial[unit] + partial[unit + stride];
        }
        sync_cube();
        level += 1usize;
    }
}
