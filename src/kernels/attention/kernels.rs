//! The attention kernels: the forward pass, the query side and the key side of the backward pass
//! (the parent module has the layout, the packed buffers, the masking rules and the launches).

use cubecl::prelude::*;

use super::{MASKED_ROW, NEG};

/// `x` (a row of `d` values at position `p`) rotated by RoPE in place: `x·cos + rotate_half(x)·sin`
/// with the tables at `aux[cos_at..]`, `aux[sin_at..]` (row `p` of each).
#[cube]
fn rotate<F: Float>(x: &mut Array<F>, aux: &Tensor<F>, cos_at: usize, sin_at: usize, #[comptime] d: usize) {
    let half = comptime![d / 2];
    for c in 0..half {
        let a = x[c];
        let b = x[c + half];
        x[c] = a * aux[cos_at + c] - b * aux[sin_at + c];
        x[c + half] = b * aux[cos_at + c + half] + a * aux[sin_at + c + half];
    }
}

/// The transpose of [`rotate`]: the gradient before RoPE from the gradient after it.
#[cube]
fn unrotate<F: Float>(g: &mut Array<F>, aux: &Tensor<F>, cos_at: usize, sin_at: usize, #[comptime] d: usize) {
    let half = comptime![d / 2];
    for c in 0..half {
        let a = g[c];
        let b = g[c + half];
        g[c] = a * aux[cos_at + c] + b * aux[sin_at + c + half];
        g[c + half] = b * aux[cos_at + c + half] - a * aux[sin_at + c];
    }
}

/// Element `(j, c)` of a key (or query) row after RoPE, read from `x` at row offset `base`.
#[cube]
fn rotated_element<F: Float>(
    x: &Tensor<F>,
    base: usize,
    c: usize,
    aux: &Tensor<F>,
    cos_at: usize,
    sin_at: usize,
    #[comptime] d: usize,
    #[comptime] rope: bool,
) -> F {
    let mut value = x[base + c];
    if rope {
        let half = comptime![d / 2];
        let partner = if c < half { -x[base + c + half] } else { x[base + c - half] };
        value = value * aux[cos_at + c] + partner * aux[sin_at + c];
    }
    value
}

/// Keys `kt .. kt + tile` of batch row `b`, kv head `kvh` (RoPE applied) and their values into
/// the workgroup's tiles `[tile, d]`, the workgroup's threads striding over the elements; keys past
/// the sequence's end are left as they are (no query sees them).
#[cube]
#[allow(clippy::too_many_arguments)]
fn load_key_tiles<F: Float>(
    k: &Tensor<F>,
    v: &Tensor<F>,
    aux: &Tensor<F>,
    k_tile: &mut Shared<[F]>,
    v_tile: &mut Shared<[F]>,
    kt: usize,
    b: usize,
    kvh: usize,
    #[comptime] d: usize,
    #[comptime] tile: usize,
    #[comptime] rope: bool,
) {
    let len = k.shape(1);
    let kv_heads = k.shape(2);
    let sin_at = len * d;
    let mut e = UNIT_POS as usize;
    while e < tile * d {
        let j = kt + e / d;
        let c = e % d;
        if j < len {
            let at = ((b * len + j) * kv_heads + kvh) * d;
            k_tile[e] = rotated_element::<F>(k, at, c, aux, j * d, sin_at + j * d, d, rope);
            v_tile[e] = v[at + c];
        }
        e += CUBE_DIM_X as usize;
    }
}

/// Whether query `i` may attend to key `j` of batch row `b`.
#[cube]
fn visible<F: Float>(i: usize, j: usize, b: usize, len: usize, window: usize, aux: &Tensor<F>, mask_at: usize) -> bool {
    let mut seen = false;
    if j < len && j <= i && i < j + window {
        seen = aux[mask_at + b * len + j] > F::new(0.5);
    }
    seen
}

#[cube(launch)]
pub(super) fn forward_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    aux: &Tensor<F>,
    out: &mut Tensor<F>,
    scale: f32,
    window: u32,
    #[comptime] d: usize,
    #[comptime] tile: usize,
    #[comptime] rope: bool,
    #[define(F)] _dtype: ElemType,
) {
    let batch = q.shape(0);
    let len = q.shape(1);
    let heads = q.shape(2);
    let kv_heads = k.shape(2);
    let group = heads / kv_heads;
    let bh = CUBE_POS_Y as usize;
    let b = bh / heads;
    let head = bh % heads;
    let kvh = head / group;
    let threads = CUBE_DIM_X as usize;
    let unit = UNIT_POS as usize;
    let q0 = CUBE_POS_X as usize * threads;
    let i = q0 + unit;
    let active = i < len;
    let row = if active { i } else { len - 1 };
    let window = if window == 0 { len } else { window as usize };
    let sin_at = len * d;
    let mut mask_at = 0usize;
    if rope {
        mask_at = 2 * len * d;
    }

    let mut qrow = Array::<F>::new(d);
    let mut acc = Array::<F>::new(d);
    let q_at = ((b * len + row) * heads + head) * d;
    for c in 0..d {
        qrow[c] = q[q_at + c];
        acc[c] = F::new(0.0);
    }
    if rope {
        rotate::<F>(&mut qrow, aux, row * d, sin_at + row * d, d);
    }
    for c in 0..d {
        qrow[c] *= F::cast_from(scale);
    }

    let mut m = F::new(NEG);
    let mut l = F::new(0.0);
    let mut k_tile = Shared::<[F]>::new_slice(tile * d);
    let mut v_tile = Shared::<[F]>::new_slice(tile * d);
    let mut scores = Array::<F>::new(tile);
    let last = if q0 + threads < len { q0 + threads - 1 } else { len - 1 };
    // The first key any query of the workgroup sees (kernels have no `saturating_sub`).
    #[allow(clippy::implicit_saturating_sub)]
    let mut kt = if q0 + 1 > window { q0 + 1 - window } else { 0usize };
    while kt <= last {
        load_key_tiles::<F>(k, v, aux, &mut k_tile, &mut v_tile, kt, b, kvh, d, tile, rope);
        sync_cube();
        if active {
            let mut tile_max = F::new(NEG);
            for jj in 0..tile {
                let mut s = F::new(NEG);
                if visible::<F>(i, kt + jj, b, len, window, aux, mask_at) {
                    s = F::new(0.0);
                    for c in 0..d {
                        s += qrow[c] * k_tile[jj * d + c];
                    }
                    tile_max = F::max(tile_max, s);
                }
                scores[jj] = s;
            }
            if tile_max > F::new(NEG) {
                let m_new = F::max(m, tile_max);
                let correction = F::exp(m - m_new);
                l *= correction;
                for c in 0..d {
                    acc[c] *= correction;
                }
                for jj in 0..tile {
                    if scores[jj] > F::new(NEG) {
                        let p = F::exp(scores[jj] - m_new);
                        l += p;
                        for c in 0..d {
                            acc[c] += p * v_tile[jj * d + c];
                        }
                    }
                }
                m = m_new;
            }
        }
        sync_cube();
        kt += tile;
    }

    if active {
        let o_at = ((b * len + i) * heads + head) * d;
        let lse_at = batch * len * heads * d + (b * heads + head) * len + i;
        if l > F::new(0.0) {
            for c in 0..d {
                out[o_at + c] = acc[c] / l;
            }
            out[lse_at] = m + F::ln(l);
        } else {
            // No visible key: the uniform softmax over all keys, as an additive finfo.min mask gives.
            for c in 0..d {
                acc[c] = F::new(0.0);
            }
            for j in 0..len {
                let at = ((b * len + j) * kv_heads + kvh) * d;
                for c in 0..d {
                    acc[c] += v[at + c];
                }
            }
            for c in 0..d {
                out[o_at + c] = acc[c] / F::cast_from(len);
            }
            out[lse_at] = F::new(MASKED_ROW);
        }
    }
}

#[cube(launch)]
pub(super) fn backward_query_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    aux: &Tensor<F>,
    saved: &Tensor<F>,
    dout: &Tensor<F>,
    packed: &mut Tensor<F>,
    scale: f32,
    window: u32,
    #[comptime] d: usize,
    #[comptime] tile: usize,
    #[comptime] rope: bool,
    #[define(F)] _dtype: ElemType,
) {
    let batch = q.shape(0);
    let len = q.shape(1);
    let heads = q.shape(2);
    let kv_heads = k.shape(2);
    let group = heads / kv_heads;
    let bh = CUBE_POS_Y as usize;
    let b = bh / heads;
    let head = bh % heads;
    let kvh = head / group;
    let threads = CUBE_DIM_X as usize;
    let unit = UNIT_POS as usize;
    let q0 = CUBE_POS_X as usize * threads;
    let i = q0 + unit;
    let active = i < len;
    let row = if active { i } else { len - 1 };
    let window = if window == 0 { len } else { window as usize };
    let sin_at = len * d;
    let mut mask_at = 0usize;
    if rope {
        mask_at = 2 * len * d;
    }
    let q_size = batch * len * heads * d;
    let rows = batch * heads * len;

    let mut qrow = Array::<F>::new(d);
    let mut grow = Array::<F>::new(d);
    let mut acc = Array::<F>::new(d);
    let q_at = ((b * len + row) * heads + head) * d;
    let mut delta = F::new(0.0);
    for c in 0..d {
        qrow[c] = q[q_at + c];
        grow[c] = dout[q_at + c];
        acc[c] = F::new(0.0);
        delta += grow[c] * saved[q_at + c];
    }
    if rope {
        rotate::<F>(&mut qrow, aux, row * d, sin_at + row * d, d);
    }
    for c in 0..d {
        qrow[c] *= F::cast_from(scale);
    }
    let stat_at = (b * heads + head) * len + row;
    let lse = saved[q_size + stat_at];
    let masked = lse >= F::new(MASKED_ROW);

    let mut k_tile = Shared::<[F]>::new_slice(tile * d);
    let mut v_tile = Shared::<[F]>::new_slice(tile * d);
    let last = if q0 + threads < len { q0 + threads - 1 } else { len - 1 };
    // The first key any query of the workgroup sees (kernels have no `saturating_sub`).
    #[allow(clippy::implicit_saturating_sub)]
    let mut kt = if q0 + 1 > window { q0 + 1 - window } else { 0usize };
    while kt <= last {
        load_key_tiles::<F>(k, v, aux, &mut k_tile, &mut v_tile, kt, b, kvh, d, tile, rope);
        sync_cube();
        if active && !masked {
            for jj in 0..tile {
                if visible::<F>(i, kt + jj, b, len, window, aux, mask_at) {
                    let mut s = F::new(0.0);
                    let mut dp = F::new(0.0);
                    for c in 0..d {
                        s += qrow[c] * k_tile[jj * d + c];
                        dp += grow[c] * v_tile[jj * d + c];
                    }
                    let ds = F::exp(s - lse) * (dp - delta);
                    for c in 0..d {
                        acc[c] += ds * k_tile[jj * d + c];
                    }
                }
            }
        }
        sync_cube();
        kt += tile;
    }

    if active {
        for c in 0..d {
            acc[c] *= F::cast_from(scale);
        }
        if rope {
            unrotate::<F>(&mut acc, aux, i * d, sin_at + i * d, d);
        }
        let at = ((b * len + i) * heads + head) * d;
        for c in 0..d {
            packed[at + c] = acc[c];
        }
        packed[q_size + stat_at] = delta;
        packed[q_size + rows + stat_at] = lse;
    }
}

#[cube(launch)]
pub(super) fn backward_key_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    aux: &Tensor<F>,
    dout: &Tensor<F>,
    stats: &Tensor<F>,
    packed: &mut Tensor<F>,
    scale: f32,
    window: u32,
    #[comptime] d: usize,
    #[comptime] tile: usize,
    #[comptime] rope: bool,
    #[define(F)] _dtype: ElemType,
) {
    let batch = q.shape(0);
    let len = q.shape(1);
    let heads = q.shape(2);
    let kv_heads = k.shape(2);
    let group = heads / kv_heads;
    let bg = CUBE_POS_Y as usize;
    let b = bg / kv_heads;
    let kvh = bg % kv_heads;
    let threads = CUBE_DIM_X as usize;
    let unit = UNIT_POS as usize;
    let j0 = CUBE_POS_X as usize * threads;
    let j = j0 + unit;
    let active = j < len;
    let row = if active { j } else { len - 1 };
    let window = if window == 0 { len } else { window as usize };
    let sin_at = len * d;
    let mut mask_at = 0usize;
    if rope {
        mask_at = 2 * len * d;
    }
    let q_size = batch * len * heads * d;
    let kv_size = batch * len * kv_heads * d;
    let rows = batch * heads * len;
    let key_real = aux[mask_at + b * len + row] > F::new(0.5);

    let mut krow = Array::<F>::new(d);
    let mut vrow = Array::<F>::new(d);
    let mut dk = Array::<F>::new(d);
    let mut dv = Array::<F>::new(d);
    let k_at = ((b * len + row) * kv_heads + kvh) * d;
    for c in 0..d {
        krow[c] = k[k_at + c];
        vrow[c] = v[k_at + c];
        dk[c] = F::new(0.0);
        dv[c] = F::new(0.0);
    }
    if rope {
        rotate::<F>(&mut krow, aux, row * d, sin_at + row * d, d);
    }

    let mut q_tile = Shared::<[F]>::new_slice(tile * d);
    let mut g_tile = Shared::<[F]>::new_slice(tile * d);
    let mut delta_tile = Shared::<[F]>::new_slice(tile);
    let mut lse_tile = Shared::<[F]>::new_slice(tile);
    let last_key = if j0 + threads < len { j0 + threads - 1 } else { len - 1 };
    let end = if last_key + window < len { last_key + window } else { len };
    for head in kvh * group..(kvh + 1) * group {
        let mut it = j0;
        while it < end {
            let mut e = unit;
            while e < tile * d {
                let i = it + e / d;
                let c = e % d;
                if i < len {
                    let at = ((b * len + i) * heads + head) * d;
                    q_tile[e] =
                        rotated_element::<F>(q, at, c, aux, i * d, sin_at + i * d, d, rope) * F::cast_from(scale);
                    g_tile[e] = dout[at + c];
                }
                e += threads;
            }
            let mut r = unit;
            while r < tile {
                if it + r < len {
                    let stat_at = (b * heads + head) * len + it + r;
                    delta_tile[r] = stats[q_size + stat_at];
                    lse_tile[r] = stats[q_size + rows + stat_at];
                }
                r += threads;
            }
            sync_cube();
            if active && key_real {
                for ii in 0..tile {
                    let i = it + ii;
                    if i < len && i >= j && i < j + window {
                        let lse = lse_tile[ii];
                        if lse < F::new(MASKED_ROW) {
                            let mut s = F::new(0.0);
                            let mut dp = F::new(0.0);
                            for c in 0..d {
                                s += q_tile[ii * d + c] * krow[c];
                                dp += g_tile[ii * d + c] * vrow[c];
                            }
                            let p = F::exp(s - lse);
                            let ds = p * (dp - delta_tile[ii]);
                            for c in 0..d {
                                dv[c] += p * g_tile[ii * d + c];
                                dk[c] += ds * q_tile[ii * d + c];
                            }
                        }
                    }
                }
            }
            sync_cube();
            it += tile;
        }
    }

    if active {
        // Queries that see no key attend uniformly to every key, padding included.
        for head in kvh * group..(kvh + 1) * group {
            for i in 0..len {
                if stats[q_size + rows + (b * heads + head) * len + i] >= F::new(MASKED_ROW) {
                    let at = ((b * len + i) * heads + head) * d;
                    for c in 0..d {
                        dv[c] += dout[at + c] / F::cast_from(len);
                    }
                }
            }
        }
        if rope {
            unrotate::<F>(&mut dk, aux, j * d, sin_at + j * d, d);
        }
        let at = ((b * len + j) * kv_heads + kvh) * d;
        for c in 0..d {
            packed[at + c] = dk[c];
            packed[kv_size + at + c] = dv[c];
        }
    }
}
