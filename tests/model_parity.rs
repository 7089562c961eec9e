//! The base models compute what transformers computed (`base_logits.safetensors`), and the
//! tokenizer reproduces the fixture token ids.

mod common;

use common::*;
use webtune::model::files::Folder;
use webtune::model::{LoadOptions, Model, NoAdapter, WeightsDtype};

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

fn load_with(name: &str, options: &LoadOptions) -> Model {
    Model::load_with(&Folder::new(fixtures().join(name).join("base")).unwrap(), &gpu(), options).unwrap()
}

/// Base logits of both fixture sequences, concatenated.
fn sequence_logits(model: &Model, name: &str) -> Vec<f32> {
    let reference = read_reference(&fixtures().join(name).join("base_logits.safetensors"));
    (0..2)
        .flat_map(|i| {
            let ids = reference[&format!("input_ids_{i}")].ids();
            floats(model.lm.forward(&ids, 1, None, &NoAdapter).unwrap())
        })
        .collect()
}

/// The f32 fixtures load unchanged by default; with f16 storage every matrix is rounded to f16
/// (relative error at most 2^-11 per weight) while activations and sums stay f32.
#[test]
fn f16_storage_stays_close_to_f32() {
    for name in MODELS.into_iter().chain(WAVE2_MODELS) {
        let f32_model = load_with(name, &LoadOptions::default());
        assert_eq!(f32_model.lm.report.weights_dtype, "f32", "{name}: an F32 checkpoint stays f32 by default");
        let f16_model = load_with(name, &LoadOptions { weights_dtype: WeightsDtype::F16, ..LoadOptions::default() });
        let report = &f16_model.lm.report;
        assert_eq!(report.weights_dtype, "f16", "{name}");
        assert!(report.weight_bytes < f32_model.lm.report.weight_bytes * 6 / 10, "{name}: {report:?}");
        let (exact, half) = (sequence_logits(&f32_model, name), sequence_logits(&f16_model, name));
        let diff = max_abs_diff(&half, &exact);
        let largest = exact.iter().fold(0f32, |m, x| m.max(x.abs()));
        println!(
            "{name}: f16 storage {:.1} KiB vs f32 {:.1} KiB; max |logit f16 − f32| = {diff:.3e} (largest |logit| {largest:.3})",
            report.weight_bytes as f64 / 1024.0,
            f32_model.lm.report.weight_bytes as f64 / 1024.0
        );
        // Rounding each weight by at most 2^-11 of itself moves each logit by a small multiple of
        // 2^-11 of its size (the errors of a dot product mostly cancel); 2^-8 of the largest logit
        // leaves room for that and fails on anything systematic (a wrong cast, a lost scale).
        assert!(diff > 0.0, "{name}: f16 storage changed nothing; are the weights really rounded?");
        assert!(diff < largest / 256.0, "{name}: f16 storage moved the logits by {diff}");
    }
}

/// A matrix with a value beyond f16's range stays f32 under f16 storage. The gate and up
/// projections are stored as one packed tensor: with one of them beyond the range they are stored
/// apart (only that one f32), with both beyond it packed in f32; either way the logits stay those
/// of the f32 model of the same checkpoint, as far as f16 rounding of the other weights moves them.
#[test]
fn matrices_beyond_f16_stay_f32_packed_or_not() {
    use webtune::model::weights::{encode_safetensors, read_host_tensors};
    let mlp = "model.layers.0.mlp";
    let (gate, up) = (format!("{mlp}.gate_proj.weight"), format!("{mlp}.up_proj.weight"));
    for beyond in [vec![gate.clone()], vec![gate.clone(), up.clone()]] {
        let dir = copy_model("llama", &format!("beyond-f16-{}", beyond.len()));
        let file = dir.join("model.safetensors");
        let mut tensors = read_host_tensors("model.safetensors", &std::fs::read(&file).unwrap()).unwrap();
        for name in &beyond {
            tensors.get_mut(name).unwrap().data[5] = 7.0e4;
        }
        std::fs::write(&file, encode_safetensors(&tensors, None)).unwrap();
        let load =
            |options: &LoadOptions| Model::load_with(&Folder::new(dir.clone()).unwrap(), &gpu(), options).unwrap();
        let f32_model = load(&LoadOptions::default());
        let f16_model = load(&LoadOptions { weights_dtype: WeightsDtype::F16, ..LoadOptions::default() });
        let mut kept = f16_model.lm.report.kept_f32.clone();
        kept.sort();
        assert_eq!(kept, beyond, "matrices kept in f32");
        let (exact, half) = (sequence_logits(&f32_model, "llama"), sequence_logits(&f16_model, "llama"));
        assert!(exact.iter().all(|v| v.is_finite()), "{beyond:?}: the f32 model's logits are not finite");
        let diff = max_abs_diff(&half, &exact);
        let largest = exact.iter().fold(0f32, |m, x| m.max(x.abs()));
        println!("{beyond:?} beyond f16: max |logit f16 − f32| = {diff:.3e} (largest |logit| {largest:.3})");
        assert!(diff < largest / 256.0, "{beyond:?}: f16 storage moved the logits by {diff}");
    }
}

/// Embedding and head matrices larger than the binding limit are stored as row blocks: lookups
/// and logits equal the unsplit model's. The limit is lowered so that the 512-row tables split
/// unevenly (e.g. 195 + 195 + 122 rows) while every other tensor still fits one binding.
#[test]
fn split_tables_match_unsplit_logits() {
    for (name, limit, blocks) in
        [("llama", 50_000, 3), ("qwen2", 50_000, 3), ("gpt2", 65_536, 2), ("qwen3", 50_000, 3), ("gemma3", 50_000, 3)]
    {
        let whole = load_with(name, &LoadOptions::default());
        assert!(whole.lm.report.split_tables.is_empty(), "{name}");
        let split = load_with(name, &LoadOptions { max_binding_bytes: Some(limit), ..LoadOptions::default() });
        let embedding = if name == "gpt2" { "transformer.wte.weight" } else { "model.embed_tokens.weight" };
        assert_eq!(split.lm.report.split_tables, [(embedding.to_owned(), blocks)], "{name}");
        let diff = max_abs_diff(&sequence_logits(&split, name), &sequence_logits(&whole, name));
        let reference = read_reference(&fixtures().join(name).join("base_logits.safetensors"));
        let expected: Vec<f32> = (0..2).flat_map(|i| reference[&format!("logits_{i}")].f32s()).collect();
        let vs_transformers = max_abs_diff(&sequence_logits(&split, name), &expected);
        println!(
            "{name}: {blocks} row blocks; max |split − unsplit| = {diff:.3e}, vs transformers {vs_transformers:.3e}"
        );
        assert!(diff <= 1e-6, "{name}: split tables change the logits by {diff}");
        assert!(vs_transformers < TOLERANCE, "{name}: {vs_transformers}");
        // Every token's embedding, looked up across blocks in a shuffled order.
        let ids: Vec<u32> = (0..512u32).map(|i| (i * 173) % 512).collect();
        assert_eq!(floats(split.lm.embed(&ids).unwrap()), floats(whole.lm.embed(&ids).unwrap()), "{name}");
    }
}
