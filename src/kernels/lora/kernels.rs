//! The LoRA layer's kernels: the forward one workgroup per row, the backward ones one thread per
//! output value (the parent module has the products each computes, the placements and the
//! launches).

use cubecl::prelude::*;

use crate::kernels::cube::{grid_row, grid_thread};

/// Value `i` (row-major numbering) of `scale · lhs [m, k] · rhs [k, r]`, written (or with
/// `accumulate` added) to `out[offset + row · row_stride + col · col_stride]`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn project_value<F: Float>(
    lhs: &Tensor<F>,
    rhs: &Tensor<F>,
    out: &mut Tensor<F>,
    i: usize,
    scale: f32,
    offset: u32,
    row_stride: u32,
    col_stride: u32,
    #[comptime] accumulate: bool,
) {
    let r = rhs.shape(1);
    let (row, col) = (i / r, i % r);
    let mut sum = F::new(0.0);
    let mut lhs_at = row * lhs.stride(0);
    let mut rhs_at = col * rhs.stride(1);
    for _ in 0..lhs.shape(1) {
        sum += lhs[lhs_at] * rhs[rhs_at];
        lhs_at += lhs.stride(1);
        rhs_at += rhs.stride(0);
    }
    let at = offset as usize + row * row_stride as usize + col * col_stride as usize;
    if comptime![accumulate] {
        out[at] += sum * F::cast_from(scale);
    } else {
        out[at] = sum * F::cast_from(scale);
    }
}

/// `Σₖ p[row, k] · q[col, k]` over the `rank` columns of `p [m, r]` and `q [n, r]`, unrolled.
#[cube]
fn low_rank_value<F: Float>(p: &Tensor<F>, q: &Tensor<F>, row: usize, col: usize, #[comptime] rank: usize) -> F {
    let (p_at, q_at) = (row * p.stride(0), col * q.stride(0));
    let (p_step, q_step) = (p.stride(1), q.stride(1));
    let mut sum = F::new(0.0);
    #[unroll]
    for k in 0..rank {
        sum += p[p_at + k * p_step] * q[q_at + k * q_step];
    }
    sum
}

/// [`project_value`] added for every value of the `[m, r]` product, one thread each.
#[cube(launch)]
pub(super) fn project_add_kernel<F: Float>(
    lhs: &Tensor<F>,
    rhs: &Tensor<F>,
    out: &mut Tensor<F>,
    scale: f32,
    offset: u32,
    row_stride: u32,
    col_stride: u32,
    #[define(F)] _dtype: ElemType,
) {
    let i = grid_thread();
    if i < lhs.shape(0) * rhs.shape(1) {
        project_value::<F>(lhs, rhs, out, i, scale, offset, row_stride, col_stride, true);
    }
}

/// The forward pass after the frozen product, one workgroup per row of `x [n, in]`: the row's
/// `u = x · at` (`at` = `A` viewed transposed, `[in, r]`) split into `rank × lanes` partial dot
/// products over the input features (summed in workgroup memory) and written to `u [n, r]`, then
/// `out = base + scale · u · bᵀ` (`b [out, r]`) over the row's outputs, a strided share each.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(super) fn forward_kernel<F: Float>(
    x: &Tensor<F>,
    at: &Tensor<F>,
    b: &Tensor<F>,
    base: &Tensor<F>,
    u: &mut Tensor<F>,
    out: &mut Tensor<F>,
    scale: f32,
    #[comptime] rank: usize,
    #[comptime] lanes: usize,
    #[define(F)] _dtype: ElemType,
) {
    let row = grid_row();
    if row >= x.shape(0) {
        terminate!();
    }
    let unit = UNIT_POS as usize;
    let threads = CUBE_DIM_X as usize;
    let pairs = comptime![rank * lanes];
    let (x_at, x_step) = (row * x.stride(0), x.stride(1));
    let mut partial = Shared::<[F]>::new_slice(pairs);
    let mut j = unit;
    while j < pairs {
        let (k, lane) = (j / lanes, j % lanes);
        let mut sum = F::new(0.0);
        let mut i = lane;
        while i < x.shape(1) {
            sum += x[x_at + i * x_step] * at[i * at.stride(0) + k * at.stride(1)];
            i += lanes;
        }
        partial[j] = sum;
        j += threads;
    }
    sync_cube();
    let mut u_row = Shared::<[F]>::new_slice(rank);
    let mut k = unit;
    while k < rank {
        let mut sum = F::new(0.0);
        let mut lane = 0usize;
        while lane < lanes {
            sum += partial[k * lanes + lane];
            lane += 1usize;
        }
        u[row * rank + k] = sum;
        u_row[k] = sum;
        k += threads;
    }
    sync_cube();
    let m = out.shape(1);
    let mut col = unit;
    while col < m {
        let (b_at, b_step) = (col * b.stride(0), b.stride(1));
        let mut sum = F::new(0.0);
        #[unroll]
        for k in 0..rank {
            sum += u_row[k] * b[b_at + k * b_step];
        }
        out[row * m + col] = base[row * base.stride(0) + col * base.stride(1)] + sum * F::cast_from(scale);
        col += threads;
    }
}

/// The backward pass's first dispatch, two independent products: threads `0..n·r` write
/// `du = scale · g · b` `[n, r]` (row-major), the next `out·r` add `dB = scale · gᵀ · u` `[out, r]`
/// to `db` at (`offset`, `row_stride`, `col_stride`). `gt` is `g` viewed transposed.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(super) fn backward_b_kernel<F: Float>(
    g: &Tensor<F>,
    gt: &Tensor<F>,
    b: &Tensor<F>,
    u: &Tensor<F>,
    du: &mut Tensor<F>,
    db: &mut Tensor<F>,
    scale: f32,
    offset: u32,
    row_stride: u32,
    col_stride: u32,
    #[define(F)] _dtype: ElemType,
) {
    let i = grid_thread();
    let r = b.shape(1);
    let du_values = g.shape(0) * r;
    if i < du_values {
        project_value::<F>(g, b, du, i, scale, 0u32, r as u32, 1u32, false);
    } else if i < du_values + gt.shape(0) * r {
        project_value::<F>(gt, u, db, i - du_values, scale, offset, row_stride, col_stride, true);
    }
}

/// The backward pass's last dispatch, after the frozen input gradient `dx = g · Wᵀ`: threads
/// `0..in·r` add `dAᵀ = xᵀ · du` `[in, r]` to `da` at (`offset`, `row_stride`, `col_stride`), the
/// next `n·in` add `du · A` to `dx` in place (`at` is `A` viewed transposed, `[in, r]`).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(super) fn backward_a_kernel<F: Float>(
    xt: &Tensor<F>,
    du: &Tensor<F>,
    at: &Tensor<F>,
    da: &mut Tensor<F>,
    dx: &mut Tensor<F>,
    offset: u32,
    row_stride: u32,
    col_stride: u32,
    #[comptime] rank: usize,
    #[define(F)] _dtype: ElemType,
) {
    let i = grid_thread();
    let da_values = xt.shape(0) * rank;
    if i < da_values {
        project_value::<F>(xt, du, da, i, 1.0f32, offset, row_stride, col_stride, true);
    } else if i < da_values + dx.len() {
        let j = i - da_values;
        let n = dx.shape(1);
        let (row, col) = (j / n, j % n);
        let at_out = row * dx.stride(0) + col * dx.stride(1);
        dx[at_out] += low_rank_value::<F>(du, at, row, col, rank);
    }
}
