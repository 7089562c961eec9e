//! Numbers for paths the parity tests do not reach, against what transformers and PEFT computed
//! (`tests/fixtures/numeric/`, made by its `make.py`): prompt tuning's TEXT init when the text is
//! shorter or longer than the virtual tokens, RoPE `linear` and `llama3` scaling, and F16 / BF16
//! checkpoints. Each case also checks that it would notice the path being skipped.

mod common;

use std::collections::{BTreeMap, HashMap};

use common::*;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;
use webtune::model::files::MemoryFiles;
use webtune::model::{Model, NoAdapter};
use webtune::peft::{PromptAdapter, PromptConfig, PromptInit};

const TOLERANCE: f32 = 1e-4;

fn numeric(name: &str) -> BTreeMap<String, RefTensor> {
    read_reference(&fixtures().join("numeric").join(name))
}

fn metadata(name: &str, key: &str) -> String {
    let bytes = std::fs::read(fixtures().join("numeric").join(name)).unwrap();
    let (_, metadata) = SafeTensors::read_metadata(&bytes).unwrap();
    metadata.metadata().as_ref().unwrap()[key].clone()
}

fn llama_file(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join("llama/base").join(name)).unwrap()
}

/// The llama fixture with its `config.json` and weights passed through `edit_config` and
/// `edit_weights` (each tensor by name, as f32, then stored as `dtype`).
fn llama_variant(edit_config: impl FnOnce(&mut Value), edit_weights: impl Fn(&str, &mut [f32]), dtype: Dtype) -> Model {
    let mut config: Value = serde_json::from_slice(&llama_file("config.json")).unwrap();
    edit_config(&mut config);
    let weights = llama_file("model.safetensors");
    let file = SafeTensors::deserialize(&weights).unwrap();
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = file
        .iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), Dtype::F32);
            let mut values: Vec<f32> =
                view.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
            edit_weights(name, &mut values);
            let bytes = match dtype {
                Dtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                // Round to nearest even, as torch's `.to(float16 / bfloat16)`.
                Dtype::F16 => values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect(),
                Dtype::BF16 => values.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect(),
                other => panic!("{other:?}"),
            };
            (name.to_owned(), view.shape().to_vec(), bytes)
        })
        .collect();
    let views =
        tensors.iter().map(|(name, shape, bytes)| (name, TensorView::new(dtype, shape.clone(), bytes).unwrap()));
    let metadata = HashMap::from([("format".to_owned(), "pt".to_owned())]);
    let mut files = MemoryFiles::new("llama fixture variant");
    files.insert("config.json", config.to_string().into_bytes());
    files.insert("model.safetensors", safetensors::serialize(views, Some(metadata)).unwrap());
    for name in ["tokenizer.json", "tokenizer_config.json"] {
        files.insert(name, llama_file(name));
    }
    Model::load(&files, &gpu()).unwrap()
}

/// Logits of the last `rows.len() / 512` positions of `ids`.
fn last_logits(model: &Model, ids: &[u32], rows: usize) -> Vec<f32> {
    let logits = model.lm.forward(ids, 1, None, &NoAdapter).unwrap();
    floats(logits.narrow(0, ids.len() - rows, rows))
}

#[test]
fn prompt_text_init_repeats_and_truncates_like_peft() {
    let reference = numeric("prompt_text_init.safetensors");
    let cases: Value = serde_json::from_str(&metadata("prompt_text_init.safetensors", "cases")).unwrap();
    let model =
        Model::load(&webtune::model::files::Folder::new(fixtures().join("llama/base")).unwrap(), &gpu()).unwrap();
    for (name, shorter) in [("repeat", true), ("truncate", false)] {
        let case = &cases[name];
        let n = case["num_virtual_tokens"].as_u64().unwrap() as usize;
        let text = case["text"].as_str().unwrap();
        let text_ids: Vec<u32> =
            case["text_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(text_ids.len() < n, shorter, "{name}: the case takes the path it names");
        assert_eq!(model.tokenizer.encode(text, true).unwrap(), text_ids, "{name}: PEFT's token ids");
        let config = PromptConfig { num_virtual_tokens: n, init: PromptInit::Text(text.to_owned()) };
        let ours = floats(PromptAdapter::init(&model.lm, &model.tokenizer, config, 0).unwrap().embeddings);
        let expected = reference[&format!("{name}.prompt_embeddings")].f32s();
        // Rows of the embedding table, copied: exactly equal.
        assert_eq!(max_abs_diff(&ours, &expected), 0.0, "{name}");
    }
}

#[test]
fn rope_scaling_matches_transformers() {
    let reference = numeric("rope_scaling.safetensors");
    let parameters: Value = serde_json::from_str(&metadata("rope_scaling.safetensors", "rope_parameters")).unwrap();
    let scale: f32 = metadata("rope_scaling.safetensors", "q_k_scale").parse().unwrap();
    let ids = reference["input_ids"].ids();
    let sharpen = |name: &str, values: &mut [f32]| {
        if name.ends_with("q_proj.weight") || name.ends_with("k_proj.weight") {
            values.iter_mut().for_each(|v| *v *= scale);
        }
    };
    let unscaled = last_logits(&llama_variant(|_| {}, sharpen, Dtype::F32), &ids, 8);
    for kind in ["linear", "llama3"] {
        let model = llama_variant(|config| config["rope_parameters"] = parameters[kind].clone(), sharpen, Dtype::F32);
        let ours = last_logits(&model, &ids, 8);
        let expected = reference[&format!("{kind}.logits")].f32s();
        let diff = max_abs_diff(&ours, &expected);
        println!("rope {kind}: max |diff| {diff:e}");
        assert!(diff < TOLERANCE, "rope {kind}: logits differ by {diff}");
        // The scaling matters far beyond the tolerance, so ignoring it would fail.
        assert!(max_abs_diff(&unscaled, &expected) > 0.1, "rope {kind}: the case does not exercise the scaling");
    }
}

#[test]
fn half_precision_checkpoints_read_like_transformers() {
    let reference = numeric("half_precision.safetensors");
    let ids = reference["input_ids"].ids();
    let full = last_logits(&llama_variant(|_| {}, |_, _| {}, Dtype::F32), &ids, 8);
    for (name, dtype) in [("f16", Dtype::F16), ("bf16", Dtype::BF16)] {
        let ours = last_logits(&llama_variant(|_| {}, |_, _| {}, dtype), &ids, 8);
        let expected = reference[&format!("{name}.logits")].f32s();
        let diff = max_abs_diff(&ours, &expected);
        println!("{name}: max |diff| {diff:e}, vs f32 weights {:e}", max_abs_diff(&full, &expected));
        assert!(diff < TOLERANCE, "{name}: logits differ by {diff}");
        // The rounding to 16 bits shows, so reading the file as anything else would fail.
        assert!(max_abs_diff(&full, &expected) > 2.0 * TOLERANCE, "{name}: the case cannot tell the precision");
    }
}
