//! The base models compute what transformers computed (`base_logits.safetensors`), and the
//! tokenizer reproduces the fixture token ids.

mod common;

use common::*;
use webtune::model::files::Folder;
use webtune::model::{Model, NoAdapter};

const TOLERANCE: f32 = 1e-4;

#[test]
fn base_logits_match_transformers() {
    let device = gpu();
    for name in MODELS.into_iter().chain(WAVE2_MODELS) {
        let model = Model::load(&Folder::new(fixtures().join(name).join("base")).unwrap(), &device).unwrap();
        let reference = read_reference(&fixtures().join(name).join("base_logits.safetensors"));
        for i in 0..2 {
            let ids = reference[&format!("input_ids_{i}")].ids();
            let expected = reference[&format!("logits_{i}")].f32s();
            let logits = model.lm.forward(&ids, 1, None, &NoAdapter).unwrap();
            let got = floats(logits);
            let err = max_abs_diff(&got, &expected);
            println!("{name} sequence {i}: max |logit - transformers| = {err:.3e}");
            assert!(err < TOLERANCE, "{name} sequence {i}: logits differ from transformers by {err}");
        }
    }
}

#[test]
fn parameter_counts_match_transformers() {
    // The manifests hold transformers' `num_parameters()` for each fixture model.
    let read = |file: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(fixtures().join(file)).unwrap()).unwrap()
    };
    let (wave1, wave2) = (read("manifest.json"), read("manifest_wave2.json"));
    let device = gpu();
    let counts = MODELS
        .map(|name| (name, &wave1[name]))
        .into_iter()
        .chain(WAVE2_MODELS.map(|name| (name, &wave2["models"][name])));
    for (name, entry) in counts {
        let model = Model::load(&Folder::new(fixtures().join(name).join("base")).unwrap(), &device).unwrap();
        assert_eq!(model.lm.parameter_count() as u64, entry["n_params"].as_u64().unwrap(), "{name}");
    }
}

#[test]
fn padded_batch_matches_single_sequences() {
    // Right padding with an attention mask must not change the real positions' logits.
    let device = gpu();
    let model = Model::load(&Folder::new(fixtures().join("llama/base")).unwrap(), &device).unwrap();
    let reference = read_reference(&fixtures().join("llama/base_logits.safetensors"));
    let (a, b) = (reference["input_ids_0"].ids(), reference["input_ids_1"].ids());
    let len = b.len();
    let mut ids = a.clone();
    ids.resize(len, 1);
    ids.extend(&b);
    let mask: Vec<u8> = (0..2 * len).map(|i| u8::from(i >= len || i < a.len())).collect();
    let logits = model.lm.forward(&ids, 2, Some(&mask), &NoAdapter).unwrap();
    let got = floats(logits);
    let vocab = 512;
    let err_a = max_abs_diff(&got[..a.len() * vocab], &reference["logits_0"].f32s());
    let err_b = max_abs_diff(&got[len * vocab..], &reference["logits_1"].f32s());
    assert!(err_a < TOLERANCE && err_b < TOLERANCE, "padded batch differs: {err_a} {err_b}");
}

#[test]
fn tokenizer_reproduces_fixture_ids() {
    let device = gpu();
    let batches: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("batches.json")).unwrap()).unwrap();
    let eval = std::fs::read_to_string(fixtures().join("data/eval.jsonl")).unwrap();
    for name in MODELS {
        let model = Model::load(&Folder::new(fixtures().join(name).join("base")).unwrap(), &device).unwrap();
        let tok = &model.tokenizer;
        assert_eq!(tok.encode("Reverse: rhwf ->", false).unwrap(), [375, 27, 340, 73, 88, 71, 361]);
        assert_eq!(tok.encode(" fwhr", false).unwrap(), [267, 88, 73, 83]);
        for (row, line) in eval.lines().take(2).enumerate() {
            let row_json: serde_json::Value = serde_json::from_str(line).unwrap();
            let mut ids = tok.encode(row_json["prompt"].as_str().unwrap(), false).unwrap();
            ids.extend(tok.encode(row_json["completion"].as_str().unwrap(), false).unwrap());
            ids.push(0);
            let expected: Vec<u32> = batches["logit_sequences_ids"][row]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(ids, expected, "{name}: eval row {row}");
        }
        assert_eq!(tok.eos_token_ids, vec![0]);
        assert_eq!(tok.pad_token_id, Some(1));
    }
}
