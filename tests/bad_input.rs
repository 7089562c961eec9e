//! Bad model folders get an error with a stable code that names the file and the tensor, and a
//! sharded or prefix-less checkpoint loads to the same logits.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use webtune::ErrorCode;
use webtune::model::files::Folder;
use webtune::model::weights::{HostTensor, encode_safetensors, read_host_tensors};
use webtune::model::{Model, NoAdapter};

fn load(dir: &Path) -> webtune::Error {
    match Model::load(&Folder::new(dir).unwrap(), &gpu()) {
        Ok(_) => panic!("{} loaded although it is broken", dir.display()),
        Err(e) => e,
    }
}

fn weights(dir: &Path) -> BTreeMap<String, HostTensor> {
    read_host_tensors("model.safetensors", &std::fs::read(dir.join("model.safetensors")).unwrap()).unwrap()
}

fn write_weights(dir: &Path, file: &str, tensors: &BTreeMap<String, HostTensor>) {
    std::fs::write(dir.join(file), encode_safetensors(tensors, None)).unwrap();
}

fn assert_error(e: &webtune::Error, code: ErrorCode, mentions: &[&str]) {
    assert_eq!(e.code, code, "unexpected code for: {e}");
    for m in mentions {
        assert!(e.message.contains(m), "message should mention {m:?}: {e}");
    }
}

#[test]
fn missing_weights_file() {
    let dir = copy_model("llama", "missing-weights");
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    assert_error(&load(&dir), ErrorCode::FileMissing, &["model.safetensors"]);
}

#[test]
fn missing_config_file() {
    let dir = copy_model("llama", "missing-config");
    std::fs::remove_file(dir.join("config.json")).unwrap();
    assert_error(&load(&dir), ErrorCode::FileMissing, &["config.json"]);
}

#[test]
fn truncated_weights() {
    let dir = copy_model("llama", "truncated");
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    std::fs::write(dir.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    assert_error(&load(&dir), ErrorCode::CorruptWeights, &["model.safetensors", "truncated"]);
}

#[test]
fn corrupt_header() {
    let dir = copy_model("gpt2", "corrupt");
    let mut bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    for b in &mut bytes[8..40] {
        *b = b'#';
    }
    std::fs::write(dir.join("model.safetensors"), &bytes).unwrap();
    assert_error(&load(&dir), ErrorCode::CorruptWeights, &["model.safetensors"]);
}

#[test]
fn missing_tensor() {
    let dir = copy_model("qwen2", "missing-tensor");
    let mut tensors = weights(&dir);
    tensors.remove("model.layers.1.self_attn.k_proj.bias").unwrap();
    write_weights(&dir, "model.safetensors", &tensors);
    assert_error(&load(&dir), ErrorCode::MissingTensor, &["model.layers.1.self_attn.k_proj.bias", "model.safetensors"]);
}

#[test]
fn wrong_shape() {
    let dir = copy_model("llama", "wrong-shape");
    let mut tensors = weights(&dir);
    tensors.insert(
        "model.layers.0.mlp.up_proj.weight".into(),
        HostTensor { shape: vec![64, 176], data: vec![0.0; 64 * 176] },
    );
    write_weights(&dir, "model.safetensors", &tensors);
    assert_error(
        &load(&dir),
        ErrorCode::ShapeMismatch,
        &["model.layers.0.mlp.up_proj.weight", "[64, 176]", "[176, 64]"],
    );
}

#[test]
fn unsupported_architecture() {
    let dir = copy_model("llama", "unsupported");
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap().replace("\"llama\"", "\"mamba\"");
    std::fs::write(dir.join("config.json"), config).unwrap();
    assert_error(&load(&dir), ErrorCode::UnsupportedArchitecture, &["mamba", "config.json"]);
}

#[test]
fn tokenizer_larger_than_vocabulary() {
    let dir = copy_model("gpt2", "small-vocab");
    let config =
        std::fs::read_to_string(dir.join("config.json")).unwrap().replace("\"vocab_size\": 512", "\"vocab_size\": 300");
    std::fs::write(dir.join("config.json"), config).unwrap();
    assert_error(&load(&dir), ErrorCode::InvalidTokenizer, &["tokenizer.json", "300"]);
}

#[test]
fn unreadable_tokenizer() {
    let dir = copy_model("llama", "bad-tokenizer");
    std::fs::write(dir.join("tokenizer.json"), b"{\"model\": 42}").unwrap();
    assert_error(&load(&dir), ErrorCode::InvalidTokenizer, &["tokenizer.json"]);
}

fn logits(dir: &Path) -> Vec<f32> {
    let model = Model::load(&Folder::new(dir).unwrap(), &gpu()).unwrap();
    let ids = [375, 27, 340, 73, 88, 71, 361];
    let out = model.lm.forward(&ids, 1, None, &NoAdapter).unwrap();
    floats(out)
}

#[test]
fn sharded_checkpoint_loads_and_a_missing_shard_is_named() {
    let dir = copy_model("llama", "sharded");
    let expected = logits(&dir);
    let tensors = weights(&dir);
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let (first, second): (BTreeMap<_, _>, BTreeMap<_, _>) =
        tensors.into_iter().partition(|(name, _)| name.contains("layers.0") || name.contains("embed"));
    let mut map = serde_json::Map::new();
    for (file, part) in [("model-00001-of-00002.safetensors", &first), ("model-00002-of-00002.safetensors", &second)] {
        write_weights(&dir, file, part);
        for name in part.keys() {
            map.insert(name.clone(), file.into());
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    assert_eq!(logits(&dir), expected);

    std::fs::remove_file(dir.join("model-00002-of-00002.safetensors")).unwrap();
    assert_error(
        &load(&dir),
        ErrorCode::FileMissing,
        &["model-00002-of-00002.safetensors", "model.safetensors.index.json"],
    );
}

#[test]
fn gpt2_checkpoint_without_transformer_prefix() {
    let dir = copy_model("gpt2", "no-prefix");
    let expected = logits(&dir);
    let renamed =
        weights(&dir).into_iter().map(|(k, v)| (k.trim_start_matches("transformer.").to_owned(), v)).collect();
    write_weights(&dir, "model.safetensors", &renamed);
    assert_eq!(logits(&dir), expected);
}

#[test]
fn untied_head_needs_lm_head() {
    let dir = copy_model("llama", "untied");
    let config = std::fs::read_to_string(dir.join("config.json"))
        .unwrap()
        .replace("\"tie_word_embeddings\": true", "\"tie_word_embeddings\": false");
    std::fs::write(dir.join("config.json"), config).unwrap();
    assert_error(&load(&dir), ErrorCode::MissingTensor, &["lm_head.weight"]);

    // With the embedding copied into lm_head.weight, the untied model computes the same logits.
    let mut tensors = weights(&dir);
    tensors.insert("lm_head.weight".into(), tensors["model.embed_tokens.weight"].clone());
    write_weights(&dir, "model.safetensors", &tensors);
    let tied = logits(&fixtures().join("llama/base"));
    assert!(max_abs_diff(&logits(&dir), &tied) < 1e-6);
}
