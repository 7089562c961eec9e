//! Top singular vectors of a weight matrix, on the host in f64, for PiSSA initialisation.
//!
//! Exact mode eigen-decomposes the smaller Gram matrix (`WᵀW` or `WWᵀ`) with Householder
//! tridiagonalisation and implicit QL (the EISPACK tred2/tql2 pair): O(min(m,n)²·max(m,n)), fine
//! for the attention projections of small models, and accurate for the largest singular values,
//! which are the ones PiSSA keeps. `niter` mode is PEFT's `pissa_niter_K`: randomized subspace
//! iteration (`torch.svd_lowrank`), for large layers.

use crate::rng::Rng;

/// PiSSA's `(A [r, in], B [out, r])` for `weight [out, in]` (row-major), as PEFT computes them:
/// `A = diag(√(S_r/scale)) Uhᵣ`, `B = V_r diag(√(S_r/scale))`, so that `scale·B A` is the best
/// rank-r approximation of `W`.
pub fn pissa_factors(
    weight: &[f32],
    rows: usize,
    cols: usize,
    r: usize,
    scale: f64,
    niter: Option<usize>,
    rng: &mut Rng,
) -> (Vec<f32>, Vec<f32>) {
    let w: Vec<f64> = weight.iter().map(|&x| x as f64).collect();
    let (sigma, left, right) = match niter {
        None => top_singular_exact(&w, rows, cols, r),
        Some(k) => top_singular_randomized(&w, rows, cols, r, k, rng),
    };
    let mut a = vec![0f32; r * cols];
    let mut b = vec![0f32; rows * r];
    for i in 0..r {
        let root = (sigma[i] / scale).sqrt();
        for c in 0..cols {
            a[i * cols + c] = (root * right[i * cols + c]) as f32;
        }
        for o in 0..rows {
            b[o * r + i] = (left[i * rows + o] * root) as f32;
        }
    }
    (a, b)
}

/// `(σ [k], left vectors [k][rows], right vectors [k][cols])` of the k largest singular values,
/// largest first, each vector stored contiguously.
type Singular = (Vec<f64>, Vec<f64>, Vec<f64>);

fn top_singular_exact(w: &[f64], rows: usize, cols: usize, k: usize) -> Singular {
    // Eigenvectors of the smaller Gram matrix are one side's singular vectors; the other side
    // follows as W u / σ (or Wᵀ v / σ).
    let right_side = cols <= rows;
    let n = rows.min(cols);
    let gram = if right_side { gram_columns(w, rows, cols) } else { gram_rows(w, rows, cols) };
    let (values, vectors) = symmetric_eigen(gram, n);
    let k = k.min(n);
    let mut sigma = Vec::with_capacity(k);
    let mut near = Vec::with_capacity(k * n);
    for i in 0..k {
        let idx = n - 1 - i;
        sigma.push(values[idx].max(0.0).sqrt());
        near.extend_from_slice(&vectors[idx * n..(idx + 1) * n]);
    }
    let far = if right_side {
        project_rows(w, rows, cols, &near, &sigma)
    } else {
        project_cols(w, rows, cols, &near, &sigma)
    };
    if right_side { (sigma, far, near) } else { (sigma, near, far) }
}

/// `WᵀW [cols, cols]`.
fn gram_columns(w: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    let mut g = vec![0.0; cols * cols];
    for o in 0..rows {
        let row = &w[o * cols..(o + 1) * cols];
        for a in 0..cols {
            let x = row[a];
            if x != 0.0 {
                for (b, gv) in g[a * cols..(a + 1) * cols].iter_mut().enumerate() {
                    *gv += x * row[b];
                }
            }
        }
    }
    g
}

/// `WWᵀ [rows, rows]`.
fn gram_rows(w: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    let mut g = vec![0.0; rows * rows];
    for a in 0..rows {
        for b in a..rows {
            let dot = dot(&w[a * cols..(a + 1) * cols], &w[b * cols..(b + 1) * cols]);
            g[a * rows + b] = dot;
            g[b * rows + a] = dot;
        }
    }
    g
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Left vectors `W u / σ` for right vectors `u` (each `[cols]`): `[k][rows]`.
fn project_rows(w: &[f64], rows: usize, cols: usize, right: &[f64], sigma: &[f64]) -> Vec<f64> {
    let mut out = vec![0.0; sigma.len() * rows];
    for (i, &s) in sigma.iter().enumerate() {
        let u = &right[i * cols..(i + 1) * cols];
        for o in 0..rows {
            out[i * rows + o] = if s > 0.0 { dot(&w[o * cols..(o + 1) * cols], u) / s } else { 0.0 };
        }
    }
    out
}

/// Right vectors `Wᵀ v / σ` for left vectors `v` (each `[rows]`): `[k][cols]`.
fn project_cols(w: &[f64], rows: usize, cols: usize, left: &[f64], sigma: &[f64]) -> Vec<f64> {
    let mut out = vec![0.0; sigma.len() * cols];
    for (i, &s) in sigma.iter().enumerate() {
        if s <= 0.0 {
            continue;
        }
        let v = &left[i * rows..(i + 1) * rows];
        let target = &mut out[i * cols..(i + 1) * cols];
        for o in 0..rows {
            let coef = v[o] / s;
            for (t, x) in target.iter_mut().zip(&w[o * cols..(o + 1) * cols]) {
                *t += coef * x;
            }
        }
    }
    out
}

/// `torch.svd_lowrank(W, q=k, niter)`: an orthonormal basis `Q` of the range of `W` by subspace
/// iteration from a Gaussian start, then the exact SVD of the small `Qᵀ W`.
fn top_singular_randomized(w: &[f64], rows: usize, cols: usize, k: usize, niter: usize, rng: &mut Rng) -> Singular {
    let k = k.min(rows.min(cols));
    let start: Vec<f64> = (0..k * cols).map(|_| rng.normal()).collect();
    let mut q = orthonormalize(apply(w, rows, cols, &start, k), rows);
    for _ in 0..niter {
        let z = orthonormalize(apply_transposed(w, rows, cols, &q, k), cols);
        q = orthonormalize(apply(w, rows, cols, &z, k), rows);
    }
    // B = Qᵀ W [k, cols]; its SVD B = U S Vh gives W ≈ (Q U) S Vh.
    let mut b = vec![0.0; k * cols];
    for i in 0..k {
        let qi = &q[i * rows..(i + 1) * rows];
        let bi = &mut b[i * cols..(i + 1) * cols];
        for o in 0..rows {
            for (t, x) in bi.iter_mut().zip(&w[o * cols..(o + 1) * cols]) {
                *t += qi[o] * x;
            }
        }
    }
    let (sigma, small_left, right) = top_singular_exact(&b, k, cols, k);
    let mut left = vec![0.0; k * rows];
    for i in 0..k {
        for j in 0..k {
            let coef = small_left[i * k + j];
            for o in 0..rows {
                left[i * rows + o] += coef * q[j * rows + o];
            }
        }
    }
    (sigma, left, right)
}

/// `W x` for `k` vectors `x [cols]`, giving `k` vectors `[rows]`.
fn apply(w: &[f64], rows: usize, cols: usize, xs: &[f64], k: usize) -> Vec<f64> {
    (0..k)
        .flat_map(|i| (0..rows).map(move |o| dot(&w[o * cols..(o + 1) * cols], &xs[i * cols..(i + 1) * cols])))
        .collect()
}

/// `Wᵀ y` for `k` vectors `y [rows]`, giving `k` vectors `[cols]`.
fn apply_transposed(w: &[f64], rows: usize, cols: usize, ys: &[f64], k: usize) -> Vec<f64> {
    let mut out = vec![0.0; k * cols];
    for i in 0..k {
        let target = &mut out[i * cols..(i + 1) * cols];
        for o in 0..rows {
            let coef = ys[i * rows + o];
            for (t, x) in target.iter_mut().zip(&w[o * cols..(o + 1) * cols]) {
                *t += coef * x;
            }
        }
    }
    out
}

/// Modified Gram–Schmidt, applied twice for stability, on vectors of length `n` stored one after
/// another.
fn orthonormalize(mut vs: Vec<f64>, n: usize) -> Vec<f64> {
    let k = vs.len() / n;
    for _ in 0..2 {
        for i in 0..k {
            for j in 0..i {
                let (done, rest) = vs.split_at_mut(i * n);
                let proj = dot(&done[j * n..(j + 1) * n], &rest[..n]);
                for (x, y) in rest[..n].iter_mut().zip(&done[j * n..(j + 1) * n]) {
                    *x -= proj * y;
                }
            }
            let v = &mut vs[i * n..(i + 1) * n];
            let norm = dot(v, v).sqrt();
            if norm > 0.0 {
                v.iter_mut().for_each(|x| *x /= norm);
            }
        }
    }
    vs
}

/// Eigen-decomposition of a symmetric `n × n` matrix (row-major): eigenvalues ascending and the
/// matching unit eigenvectors, each stored contiguously (`vectors[i*n..(i+1)*n]`).
pub fn symmetric_eigen(a: Vec<f64>, n: usize) -> (Vec<f64>, Vec<f64>) {
    if n == 0 {
        return (Vec::new(), Vec::new());
    }
    let mut v: Vec<Vec<f64>> = a.chunks(n).map(<[f64]>::to_vec).collect();
    let mut d = vec![0.0; n];
    let mut e = vec![0.0; n];
    tred2(&mut v, &mut d, &mut e);
    // tql2 rotates pairs of columns of V; store them as rows (`cols[i]` = column i).
    let mut cols: Vec<Vec<f64>> = (0..n).map(|j| (0..n).map(|i| v[i][j]).collect()).collect();
    tql2(&mut cols, &mut d, &mut e);
    (d, cols.concat())
}

/// Householder reduction of the symmetric matrix in `v` to tridiagonal form (diagonal `d`,
/// sub-diagonal `e`); `v` becomes the accumulated orthogonal transformation.
fn tred2(v: &mut [Vec<f64>], d: &mut [f64], e: &mut [f64]) {
    let n = d.len();
    d.copy_from_slice(&v[n - 1]);
    for i in (1..n).rev() {
        let scale: f64 = d[..i].iter().map(|x| x.abs()).sum();
        let mut h = 0.0;
        if scale == 0.0 {
            e[i] = d[i - 1];
            for j in 0..i {
                d[j] = v[i - 1][j];
                v[i][j] = 0.0;
                v[j][i] = 0.0;
            }
        } else {
            for dk in &mut d[..i] {
                *dk /= scale;
                h += *dk * *dk;
            }
            let mut f = d[i - 1];
            let mut g = if f > 0.0 { -h.sqrt() } else { h.sqrt() };
            e[i] = scale * g;
            h -= f * g;
            d[i - 1] = f - g;
            e[..i].fill(0.0);
            for j in 0..i {
                f = d[j];
                v[j][i] = f;
                g = e[j] + v[j][j] * f;
                for k in j + 1..i {
                    g += v[k][j] * d[k];
                    e[k] += v[k][j] * f;
                }
                e[j] = g;
            }
            f = 0.0;
            for j in 0..i {
                e[j] /= h;
                f += e[j] * d[j];
            }
            let hh = f / (h + h);
            for j in 0..i {
                e[j] -= hh * d[j];
            }
            for j in 0..i {
                f = d[j];
                g = e[j];
                for k in j..i {
                    v[k][j] -= f * e[k] + g * d[k];
                }
                d[j] = v[i - 1][j];
                v[i][j] = 0.0;
            }
        }
        d[i] = h;
    }
    for i in 0..n - 1 {
        v[n - 1][i] = v[i][i];
        v[i][i] = 1.0;
        let h = d[i + 1];
        if h != 0.0 {
            for k in 0..=i {
                d[k] = v[k][i + 1] / h;
            }
            for j in 0..=i {
                let g: f64 = (0..=i).map(|k| v[k][i + 1] * v[k][j]).sum();
                for k in 0..=i {
                    v[k][j] -= g * d[k];
                }
            }
        }
        for row in v.iter_mut().take(i + 1) {
            row[i + 1] = 0.0;
        }
    }
    for j in 0..n {
        d[j] = v[n - 1][j];
        v[n - 1][j] = 0.0;
    }
    v[n - 1][n - 1] = 1.0;
    e[0] = 0.0;
}

/// Implicit QL on the tridiagonal `(d, e)`; `cols[i]` holds column i of the transformation and
/// ends as the eigenvector of `d[i]`. Eigenvalues end sorted ascending.
fn tql2(cols: &mut [Vec<f64>], d: &mut [f64], e: &mut [f64]) {
    let n = d.len();
    for i in 1..n {
        e[i - 1] = e[i];
    }
    e[n - 1] = 0.0;
    let mut f = 0.0;
    let mut tst1: f64 = 0.0;
    let eps = f64::EPSILON;
    for l in 0..n {
        tst1 = tst1.max(d[l].abs() + e[l].abs());
        let mut m = l;
        while m < n && e[m].abs() > eps * tst1 {
            m += 1;
        }
        if m > l {
            loop {
                let mut g = d[l];
                let mut p = (d[l + 1] - g) / (2.0 * e[l]);
                let mut r = p.hypot(1.0);
                if p < 0.0 {
                    r = -r;
                }
                d[l] = e[l] / (p + r);
                d[l + 1] = e[l] * (p + r);
                let dl1 = d[l + 1];
                let mut h = g - d[l];
                for di in &mut d[l + 2..n] {
                    *di -= h;
                }
                f += h;
                p = d[m];
                let (mut c, mut c2, mut c3) = (1.0, 1.0, 1.0);
                let el1 = e[l + 1];
                let (mut s, mut s2) = (0.0, 0.0);
                for i in (l..m).rev() {
                    c3 = c2;
                    c2 = c;
                    s2 = s;
                    g = c * e[i];
                    h = c * p;
                    r = p.hypot(e[i]);
                    e[i + 1] = s * r;
                    s = e[i] / r;
                    c = p / r;
                    p = c * d[i] - s * g;
                    d[i + 1] = h + s * (c * g + s * d[i]);
                    let (lo, hi) = cols.split_at_mut(i + 1);
                    for (a, b) in lo[i].iter_mut().zip(hi[0].iter_mut()) {
                        let old = *b;
                        *b = s * *a + c * old;
                        *a = c * *a - s * old;
                    }
                }
                p = -s * s2 * c3 * el1 * e[l] / dl1;
                e[l] = s * p;
                d[l] = c * p;
                if e[l].abs() <= eps * tst1 {
                    break;
                }
            }
        }
        d[l] += f;
        e[l] = 0.0;
    }
    for i in 0..n.saturating_sub(1) {
        let k = (i..n).min_by(|&a, &b| d[a].total_cmp(&d[b])).unwrap_or(i);
        if k != i {
            d.swap(i, k);
            cols.swap(i, k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_matrix(rows: usize, cols: usize, seed: u64) -> Vec<f64> {
        let mut rng = Rng::new(seed);
        (0..rows * cols).map(|_| rng.normal()).collect()
    }

    #[test]
    fn eigen_reconstructs_symmetric_matrix() {
        let n = 7;
        let m = random_matrix(n, n, 3);
        let sym: Vec<f64> = (0..n * n).map(|i| m[i] + m[(i % n) * n + i / n]).collect();
        let (values, vectors) = symmetric_eigen(sym.clone(), n);
        assert!(values.windows(2).all(|w| w[0] <= w[1]));
        for i in 0..n {
            for j in 0..n {
                let rebuilt: f64 = (0..n).map(|k| vectors[k * n + i] * values[k] * vectors[k * n + j]).sum();
                assert!((rebuilt - sym[i * n + j]).abs() < 1e-10);
            }
        }
    }

    /// Singular values and a full reconstruction, for tall and wide matrices.
    #[test]
    fn exact_svd_reconstructs() {
        for (rows, cols) in [(9, 5), (5, 9)] {
            let w = random_matrix(rows, cols, 11);
            let k = rows.min(cols);
            let (sigma, left, right) = top_singular_exact(&w, rows, cols, k);
            assert!(sigma.windows(2).all(|p| p[0] >= p[1]));
            for o in 0..rows {
                for c in 0..cols {
                    let rebuilt: f64 = (0..k).map(|i| left[i * rows + o] * sigma[i] * right[i * cols + c]).sum();
                    assert!((rebuilt - w[o * cols + c]).abs() < 1e-9, "{rows}x{cols}");
                }
            }
        }
    }

    #[test]
    fn randomized_svd_finds_dominant_subspace() {
        // A matrix with a clear gap after rank 3: the randomized method must find its top values.
        let (rows, cols, k) = (20, 12, 3);
        let w = random_matrix(rows, cols, 5);
        let (sigma, left, right) = top_singular_exact(&w, rows, cols, cols);
        let mut spiked = vec![0.0; rows * cols];
        for i in 0..cols {
            let s = if i < k { 100.0 * sigma[i] } else { sigma[i] };
            for o in 0..rows {
                for c in 0..cols {
                    spiked[o * cols + c] += left[i * rows + o] * s * right[i * cols + c];
                }
            }
        }
        let exact = top_singular_exact(&spiked, rows, cols, k).0;
        let approx = top_singular_randomized(&spiked, rows, cols, k, 4, &mut Rng::new(1)).0;
        for (a, b) in exact.iter().zip(&approx) {
            assert!((a - b).abs() / a < 1e-8, "{exact:?} vs {approx:?}");
        }
    }
}
