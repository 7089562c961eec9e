//! Gemma 3's sliding-window layers: a padded batch gives the unpadded logits (padding rows that
//! see no key stay finite), and incremental decoding with the KV cache, which keeps only the
//! keys a sliding layer can still see, gives the logits of recomputing the whole sequence.

mod common;

use common::*;
use webtune::model::files::Folder;
use webtune::model::{KvCache, LayerAttention, Model, NoAdapter};
use webtune::peft::Adapter;
use webtune::peft::files::import;

const TOLERANCE: f32 = 1e-4;

fn gemma() -> Model {
    Model::load(&Folder::new(fixtures().join("gemma3/base")).unwrap(), &gpu()).unwrap()
}

#[test]
fn padded_rows_beyond_the_window_stay_finite() {
    let model = gemma();
    let reference = read_reference(&fixtures().join("gemma3/base_logits.safetensors"));
    let (a, b) = (reference["input_ids_0"].ids(), reference["input_ids_1"].ids());
    let window = model.lm.config.sliding_window.unwrap();
    // Both rows padded to a width where the last padding rows lie a whole window past their
    // row's last real token: in a sliding layer they see no key at all.
    let len = b.len() + window + 2;
    let mut ids = a.clone();
    ids.resize(len, 1);
    ids.extend(&b);
    ids.resize(2 * len, 1);
    let mask: Vec<u8> = (0..2 * len).map(|i| u8::from(i % len < if i < len { a.len() } else { b.len() })).collect();
    let got = floats(model.lm.forward(&ids, 2, Some(&mask), &NoAdapter).unwrap());
    assert!(got.iter().all(|x| x.is_finite()), "a padding row turned into NaN or infinity");
    let vocab = model.lm.config.vocab_size;
    let err_a = max_abs_diff(&got[..a.len() * vocab], &reference["logits_0"].f32s());
    let err_b = max_abs_diff(&got[len * vocab..(len + b.len()) * vocab], &reference["logits_1"].f32s());
    println!("gemma3 padded batch: max |Δ| {err_a:.3e}, {err_b:.3e}");
    assert!(err_a < TOLERANCE && err_b < TOLERANCE, "padded batch differs: {err_a} {err_b}");
}

/// Feeds a 4-token prompt, then one token at a time well past the window, comparing each step's
/// logits with a full recomputation; the sliding layers hold at most `window - 1` keys between
/// steps while the full layer holds them all.
#[test]
fn kv_cache_keeps_only_the_window_and_matches_recomputation() {
    let model = gemma();
    let dir = fixtures().join("gemma3/prompt_tuning_random/final");
    let config = std::fs::read_to_string(dir.join("adapter_config.json")).unwrap();
    let weights = std::fs::read(dir.join("adapter_model.safetensors")).unwrap();
    let prompt_tuning = block(import(&config, &weights, &model.lm)).unwrap();
    let window = model.lm.config.sliding_window.unwrap();
    let ids: Vec<u32> = model.tokenizer.encode("Reverse: daczsb -> bszcad and more words", false).unwrap();
    assert!(ids.len() > 2 * window);
    for adapter in [Adapter::none(&model.lm), prompt_tuning] {
        let mut cache = KvCache::default();
        let mut worst = 0f32;
        let mut fed = 4;
        let mut step = adapter.hidden(&model.lm, &ids[..fed], 1, None, Some(&mut cache)).unwrap();
        loop {
            let rows = step.dims()[0];
            let cached = floats(model.lm.logits(step.narrow(0, rows - 1, 1)));
            let full = adapter.hidden(&model.lm, &ids[..fed], 1, None, None).unwrap();
            let rows = full.dims()[0];
            let recomputed = floats(model.lm.logits(full.narrow(0, rows - 1, 1)));
            worst = worst_of([worst, max_abs_diff(&cached, &recomputed)]);
            for (layer, kind) in model.lm.config.layer_types.iter().enumerate() {
                let expected = match kind {
                    LayerAttention::Full => cache.len(),
                    LayerAttention::Sliding => cache.len().min(window - 1),
                };
                assert_eq!(cache.kept(layer), expected, "layer {layer} after {} positions", cache.len());
            }
            if fed == ids.len() {
                break;
            }
            step = adapter.hidden(&model.lm, &ids[fed..fed + 1], 1, None, Some(&mut cache)).unwrap();
            fed += 1;
        }
        println!("gemma3 ({} virtual tokens): cached vs recomputed logits, max |Δ| {worst:.3e}", adapter.prefix_len());
        assert!(worst < TOLERANCE, "the cached decoding differs from recomputation by {worst}");
    }
}
