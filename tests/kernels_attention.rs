//! The fused attention kernel (`webtune::kernels::attention`: RoPE, grouped-query heads, padding,
//! sliding windows) against transformers' eager attention in composed tensor ops.
//! Outputs and gradients within 1e-4 relative to their size (`assert_gradient_close`: elementwise
//! `|d| ≤ 1e-4·max(1, |ref|)` and relative norm 1e-3; NaN fails). Run on the default device (the
//! Flex CPU backend here) and with `WEBTUNE_DEVICE=gpu` (the CubeCL kernels through wgpu, Mesa
//! lavapipe here).

mod common;

use burn::tensor::{Tensor, TensorData};
use common::kernel_checks::*;
use common::*;
use webtune::kernels;

struct AttentionCase {
    batch: usize,
    len: usize,
    heads: usize,
    kv_heads: usize,
    d: usize,
    rope: bool,
    window: Option<usize>,
    /// `key_mask[b][j]`.
    padded: fn(usize, usize) -> bool,
}

#[test]
fn attention_forward_and_backward_match_eager_attention() {
    let _serial = one_at_a_time();
    let device = gpu();
    let mut cases = vec![
        // Right padding, RoPE, grouped-query heads.
        AttentionCase {
            batch: 2,
            len: 37,
            heads: 4,
            kv_heads: 2,
            d: 16,
            rope: true,
            window: None,
            padded: |b, j| b == 1 && j >= 27,
        },
        // Left padding (queries 0..5 of row 1 see no key) and a sliding window over a padded gap
        // (queries 17..19 of row 0 see only padding).
        AttentionCase {
            batch: 2,
            len: 40,
            heads: 2,
            kv_heads: 1,
            d: 32,
            rope: true,
            window: Some(8),
            padded: |b, j| (b == 1 && j < 5) || (b == 0 && (10..20).contains(&j)),
        },
        // Several tiles of keys and of queries, three query heads per kv head, no RoPE.
        AttentionCase {
            batch: 1,
            len: 130,
            heads: 3,
            kv_heads: 1,
            d: 64,
            rope: false,
            window: None,
            padded: |_, _| false,
        },
        // Qwen3's and Gemma 3's head sizes.
        AttentionCase {
            batch: 1,
            len: 33,
            heads: 2,
            kv_heads: 2,
            d: 128,
            rope: true,
            window: Some(20),
            padded: |_, j| j == 3,
        },
        AttentionCase {
            batch: 1,
            len: 20,
            heads: 2,
            kv_heads: 1,
            d: 256,
            rope: true,
            window: None,
            padded: |_, _| false,
        },
    ];
    // The longest sequences the loop budget admits on llvmpipe (the limit the model checks
    // before it uses the kernel there): the last workgroup's rows must still be written.
    let limit = webtune::device::info_of(&device).shader_loop_limit.or(Some(65_535));
    for (heads, kv_heads, d) in [(1, 1, 64), (2, 1, 64), (1, 1, 128)] {
        let fits = |len| kernels::attention_fits(&kernels::AttentionShape { batch: 1, len, heads, kv_heads, d }, limit);
        let len = (1..).take_while(|&len| fits(len)).last().expect("one token fits");
        assert!(!fits(len + 1) && len > 100, "{heads}/{kv_heads} heads, d {d}: longest fitting length {len}");
        cases.push(AttentionCase { batch: 1, len, heads, kv_heads, d, rope: true, window: None, padded: |_, _| false });
    }
    for (n, c) in cases.iter().enumerate() {
        let name = format!(
            "attention case {n} (b {} len {} heads {}/{} d {} rope {} window {:?})",
            c.batch, c.len, c.heads, c.kv_heads, c.d, c.rope, c.window
        );
        let key_mask: Vec<u8> = (0..c.batch * c.len).map(|x| u8::from(!(c.padded)(x / c.len, x % c.len))).collect();
        // Rows that see no key: eager attention gives them the uniform softmax and, through
        // autodiff, spurious q/k gradients; the kernels give none. Compared separately below.
        let blind: Vec<bool> = (0..c.batch * c.len)
            .map(|x| !(0..c.len).any(|j| sees(x % c.len, j, c.window, key_mask[(x / c.len) * c.len + j] != 0)))
            .collect();
        let tables = c.rope.then(|| rope_tables(c.len, c.d));
        let inputs = kernels::AttentionInputs::new(
            c.batch,
            c.len,
            Some(&key_mask),
            tables.as_ref().map(|(cos, sin)| (cos.as_slice(), sin.as_slice())),
            &device,
        );
        let scale = 1.0 / (c.d as f64).sqrt();
        let q = values([c.batch, c.len, c.heads, c.d], 20 + n as u64, 1.5, &device);
        let k = values([c.batch, c.len, c.kv_heads, c.d], 30 + n as u64, 1.5, &device);
        let v = values([c.batch, c.len, c.kv_heads, c.d], 40 + n as u64, 1.0, &device);
        let upstream = values([c.batch, c.len, c.heads, c.d], 50 + n as u64, 1.0, &device);
        let row_weights = |blind_rows: bool| {
            let w: Vec<f32> = blind.iter().map(|&b| if b == blind_rows { 1.0 } else { 0.0 }).collect();
            Tensor::<1>::from_data(TensorData::new(w, [c.batch * c.len]), &device).reshape([c.batch, c.len, 1, 1])
        };
        let run = |fused: bool, weights: Tensor<4>| {
            let (qt, kt, vt) = (tracked(&q), tracked(&k), tracked(&v));
            let out = if fused {
                kernels::attention(qt.clone(), kt.clone(), vt.clone(), &inputs, scale, c.window)
            } else {
                attention_reference(qt.clone(), kt.clone(), vt.clone(), &key_mask, tables.as_ref(), scale, c.window)
            };
            let grads = (out.clone() * (upstream.clone() * weights).autodiff()).sum().backward();
            let grad = |t: &Tensor<4>| t.grad(&grads).unwrap();
            (out.inner(), grad(&qt), grad(&kt), grad(&vt))
        };
        let (out, dq, dk, dv) = run(true, row_weights(false));
        let (ref_out, ref_dq, ref_dk, ref_dv) = run(false, row_weights(false));
        close(&format!("{name}: out"), out, ref_out);
        close(&format!("{name}: dq"), dq, ref_dq);
        close(&format!("{name}: dk"), dk, ref_dk);
        close(&format!("{name}: dv"), dv, ref_dv);
        if blind.iter().any(|&b| b) {
            let (_, dq, dk, dv) = run(true, row_weights(true));
            let (_, _, _, ref_dv) = run(false, row_weights(true));
            for (what, g) in [("dq", dq), ("dk", dk)] {
                let worst = max_abs_diff(&floats(g.clone()), &vec![0.0; g.shape().num_elements()]);
                println!("{name}: {what} from rows that see no key: max {worst:.1e}");
                assert!(worst == 0.0, "{name}: rows that see no key passed {what} {worst}");
            }
            close(&format!("{name}: dv from rows that see no key"), dv, ref_dv);
        }
    }
}
