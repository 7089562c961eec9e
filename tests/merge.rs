//! Merged export: the folder written for base + adapter loads with webtune's own loader as a plain
//! model and gives the logits of base + adapter within 1e-4 (f32), for LoRA, PiSSA, DoRA and IA3,
//! on nn.Linear (llama, qwen2 with biases) and Conv1D (gpt2) layers; sharded and BF16 outputs keep
//! transformers' layout and the base's dtype; nothing is ever overwritten.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use burn::tensor::{Tensor, TensorData};
use common::*;
use safetensors::{Dtype, SafeTensors};
use webtune::ErrorCode;
use webtune::model::files::Folder;
use webtune::model::weights::read_host_tensors;
use webtune::model::{Model, NoAdapter};
use webtune::peft::merge::{MAX_SHARD_BYTES, MergedModel, write_folder};
use webtune::peft::{Adapter, LoraAdapter, LoraConfig, LoraInit, read_adapter};
use webtune::rng::Rng;

const TOLERANCE: f32 = 1e-4;

fn model(dir: &Path) -> Model {
    Model::load(&Folder::new(dir).unwrap(), &gpu()).unwrap()
}

fn fixture_adapter(m: &Model, run: &str) -> Adapter {
    block(read_adapter(&Folder::new(fixtures().join(run).join("final")).unwrap(), &m.lm)).unwrap()
}

/// The adapter with every trainable value moved by N(0, scale²) noise, so that the merged weights
/// differ clearly from the base (IA3's 20 reference steps move the logits by < 0.01 only).
fn perturbed(adapter: &Adapter, scale: f64) -> Adapter {
    let mut rng = Rng::new(9);
    let values = adapter
        .params()
        .into_iter()
        .map(|(_, t)| {
            let dims = t.dims();
            let noise: Vec<f32> = (0..dims[0] * dims[1]).map(|_| (scale * rng.normal()) as f32).collect();
            t.clone() + Tensor::from_data(TensorData::new(noise, dims), &t.device())
        })
        .collect();
    adapter.with_params(values)
}

fn merge_into(m: &Model, base: &Path, adapter: &Adapter, out: &Path, shard_bytes: u64) -> webtune::Result<()> {
    let merged = MergedModel::new(m.lm.clone(), adapter.clone(), Box::new(Folder::new(base).unwrap()), shard_bytes)?;
    block(write_folder(merged, out))
}

const SEQUENCES: [&[u32]; 2] = [&[375, 27, 340, 73, 88, 71, 361, 267, 88, 73, 83, 0], &[375, 27, 261, 494, 452, 296]];

/// Max |merged − (base + adapter)| and max |base + adapter − base| over the test sequences.
fn compare(m: &Model, adapter: &Adapter, merged_dir: &Path) -> (f32, f32) {
    let merged = model(merged_dir);
    let (mut diff, mut effect) = (0f32, 0f32);
    for ids in SEQUENCES {
        let with_adapter = floats(m.lm.logits(adapter.hidden(&m.lm, ids, 1, None, None).unwrap()));
        let base = floats(m.lm.forward(ids, 1, None, &NoAdapter).unwrap());
        let folded = floats(merged.lm.forward(ids, 1, None, &NoAdapter).unwrap());
        diff = worst_of([diff, max_abs_diff(&folded, &with_adapter)]);
        effect = worst_of([effect, max_abs_diff(&with_adapter, &base)]);
    }
    (diff, effect)
}

fn check_merge(model_name: &str, what: &str, adapter: impl FnOnce(&Model) -> Adapter) {
    let base = fixtures().join(model_name).join("base");
    let m = model(&base);
    let adapter = adapter(&m);
    let out = scratch(&format!("merge-{model_name}-{what}")).join("merged");
    merge_into(&m, &base, &adapter, &out, MAX_SHARD_BYTES).unwrap();
    let (diff, effect) = compare(&m, &adapter, &out);
    println!(
        "{model_name} {what}: merged vs base + adapter max |Δ logits| {diff:.2e} (the adapter moves them by {effect:.2e})"
    );
    assert!(diff < TOLERANCE, "{model_name} {what}: merged logits differ by {diff}");
    assert!(effect > 1e-2, "{model_name} {what}: the adapter barely changes the logits ({effect}), a weak test");
    // Everything but the weights is the base's, byte for byte.
    for file in ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"] {
        assert_eq!(std::fs::read(out.join(file)).unwrap(), std::fs::read(base.join(file)).unwrap(), "{file}");
    }
    let names: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(!names.iter().any(|n| n.ends_with(".partial")), "{names:?}");
}

#[test]
fn llama_lora() {
    check_merge("llama", "lora", |m| perturbed(&fixture_adapter(m, "llama/lora"), 0.02));
}

#[test]
fn llama_pissa() {
    check_merge("llama", "pissa", |m| {
        let config = LoraConfig {
            init: LoraInit::Pissa { niter: None },
            target_modules: ["q_proj", "k_proj", "v_proj", "o_proj"].map(String::from).to_vec(),
            ..LoraConfig::default()
        };
        let adapter = Adapter::Lora(block(LoraAdapter::init(&m.lm, config, 0)).unwrap());
        perturbed(&adapter, 0.05)
    });
}

#[test]
fn llama_dora() {
    check_merge("llama", "dora", |m| perturbed(&fixture_adapter(m, "llama/dora"), 0.05));
}

#[test]
fn qwen2_dora_and_ia3_with_biases() {
    check_merge("qwen2", "dora", |m| perturbed(&fixture_adapter(m, "qwen2/dora"), 0.05));
    check_merge("qwen2", "ia3", |m| perturbed(&fixture_adapter(m, "qwen2/ia3"), 0.3));
}

#[test]
fn llama_ia3() {
    check_merge("llama", "ia3", |m| perturbed(&fixture_adapter(m, "llama/ia3"), 0.3));
}

#[test]
fn gpt2_conv1d_ia3_and_lora() {
    check_merge("gpt2", "ia3", |m| perturbed(&fixture_adapter(m, "gpt2/ia3"), 0.3));
    check_merge("gpt2", "lora", |m| perturbed(&fixture_adapter(m, "gpt2/lora"), 0.02));
}

/// A GPT-2 checkpoint saved without the `transformer.` prefix is merged by its own key names.
#[test]
fn gpt2_checkpoint_without_prefix() {
    let base = copy_model("gpt2", "merge-no-prefix");
    let bytes = std::fs::read(base.join("model.safetensors")).unwrap();
    let renamed: BTreeMap<_, _> = read_host_tensors("model.safetensors", &bytes)
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k.trim_start_matches("transformer.").to_owned(), v))
        .collect();
    std::fs::write(base.join("model.safetensors"), webtune::model::weights::encode_safetensors(&renamed, None))
        .unwrap();
    let m = model(&base);
    let adapter = perturbed(&fixture_adapter(&m, "gpt2/ia3"), 0.3);
    let out = base.join("merged");
    merge_into(&m, &base, &adapter, &out, MAX_SHARD_BYTES).unwrap();
    let merged = read_host_tensors("m", &std::fs::read(out.join("model.safetensors")).unwrap()).unwrap();
    assert!(merged.contains_key("h.0.attn.c_attn.weight"));
    assert!(compare(&m, &adapter, &out).0 < TOLERANCE);
}

/// Above the shard size the weights are split like transformers' `save_pretrained`, with an index
/// that webtune's loader (and transformers') follows.
#[test]
fn sharded_output() {
    let base = fixtures().join("llama/base");
    let m = model(&base);
    let adapter = perturbed(&fixture_adapter(&m, "llama/dora"), 0.05);
    let out = scratch("merge-sharded").join("merged");
    merge_into(&m, &base, &adapter, &out, 100_000).unwrap();
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("model.safetensors.index.json")).unwrap()).unwrap();
    let weight_map = index["weight_map"].as_object().unwrap();
    let mut shards: Vec<&str> = weight_map.values().map(|v| v.as_str().unwrap()).collect();
    shards.sort();
    shards.dedup();
    assert!(shards.len() > 2, "{shards:?}");
    let count = shards.len();
    let (mut total, mut tensors) = (0, 0);
    for (i, shard) in shards.iter().enumerate() {
        assert_eq!(*shard, format!("model-{:05}-of-{count:05}.safetensors", i + 1));
        let bytes = std::fs::read(out.join(shard)).unwrap();
        assert!(bytes.len() <= 100_000 + 1_000 || SafeTensors::deserialize(&bytes).unwrap().len() == 1, "{shard}");
        let file = SafeTensors::deserialize(&bytes).unwrap();
        for (name, view) in file.tensors() {
            assert_eq!(weight_map[&name], *shard);
            total += view.data().len();
            tensors += 1;
        }
    }
    assert_eq!(tensors, weight_map.len());
    assert_eq!(index["metadata"]["total_size"], total);
    assert!(!out.join("model.safetensors").exists());
    let (diff, _) = compare(&m, &adapter, &out);
    assert!(diff < TOLERANCE, "{diff}");
}

/// A BF16 base gives a BF16 merged model: untouched tensors are copied byte for byte and merged
/// ones are the f32 merge rounded to BF16.
#[test]
fn bf16_base_stays_bf16() {
    let base = copy_model("llama", "merge-bf16");
    let bytes = std::fs::read(base.join("model.safetensors")).unwrap();
    let tensors = read_host_tensors("model.safetensors", &bytes).unwrap();
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(k, t)| (k, t.shape, t.data.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect()))
        .collect();
    let views = data.iter().map(|(k, shape, d)| {
        (k.as_str(), safetensors::tensor::TensorView::new(Dtype::BF16, shape.clone(), d).unwrap())
    });
    let bf16 = safetensors::serialize(views, None).unwrap();
    std::fs::write(base.join("model.safetensors"), &bf16).unwrap();
    let m = model(&base);
    let adapter = perturbed(&fixture_adapter(&m, "llama/lora"), 0.02);
    let out = base.join("merged");
    merge_into(&m, &base, &adapter, &out, MAX_SHARD_BYTES).unwrap();
    let merged_bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let (merged, source) = (SafeTensors::deserialize(&merged_bytes).unwrap(), SafeTensors::deserialize(&bf16).unwrap());
    let Adapter::Lora(lora) = &adapter else { panic!() };
    let adapted: Vec<String> = lora.modules.iter().map(|m| format!("{}.weight", m.path)).collect();
    assert_eq!(merged.len(), source.len());
    for (name, view) in source.tensors() {
        let out = merged.tensor(&name).unwrap();
        assert_eq!(out.dtype(), Dtype::BF16, "{name}");
        assert_eq!(out.shape(), view.shape(), "{name}");
        assert_eq!(out.data() == view.data(), !adapted.contains(&name), "{name}: copied iff not adapted");
    }
    // Merged values: the f32 merge (base + adapter) rounded once.
    let (diff, _) = compare(&m, &adapter, &out);
    assert!(diff < 0.05, "bf16 rounding of merged weights moved the logits by {diff}");
}

#[test]
fn refusals_leave_everything_untouched() {
    let base = fixtures().join("llama/base");
    let m = model(&base);
    let adapter = fixture_adapter(&m, "llama/lora");
    // A non-empty output folder is never written into.
    let out = scratch("merge-occupied");
    std::fs::write(out.join("model.safetensors"), b"precious").unwrap();
    let Err(e) = merge_into(&m, &base, &adapter, &out, MAX_SHARD_BYTES) else { panic!("wrote into a full folder") };
    assert_eq!(e.code, ErrorCode::InvalidOptions);
    assert!(e.message.contains("not empty"), "{e}");
    assert_eq!(std::fs::read(out.join("model.safetensors")).unwrap(), b"precious");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1);

    // Methods that add computation cannot be folded in.
    let lm = m.lm.clone();
    for (run, method) in [("adapterhub/llama/seq_bn", "seq_bn"), ("llama/prompt_tuning_text", "prompt_tuning")] {
        let adapter = fixture_adapter(&m, run);
        let Err(e) = MergedModel::new(lm.clone(), adapter, Box::new(Folder::new(&base).unwrap()), MAX_SHARD_BYTES)
        else {
            panic!("{method} merged")
        };
        assert_eq!(e.code, ErrorCode::InvalidOptions);
        assert!(e.message.contains(method) && e.message.contains("cannot be folded"), "{e}");
    }

    // The base folder must be the model the adapter was trained on.
    let Err(e) = MergedModel::new(
        lm.clone(),
        adapter.clone(),
        Box::new(Folder::new(fixtures().join("qwen2/base")).unwrap()),
        MAX_SHARD_BYTES,
    ) else {
        panic!("merged into another model")
    };
    assert!(e.message.contains("config.json") && e.message.contains("another model"), "{e}");

    // A base whose adapted tensor is missing is named before anything is written.
    let broken = copy_model("llama", "merge-missing");
    let mut tensors = read_host_tensors("m", &std::fs::read(broken.join("model.safetensors")).unwrap()).unwrap();
    tensors.remove("model.layers.1.self_attn.q_proj.weight");
    std::fs::write(broken.join("model.safetensors"), webtune::model::weights::encode_safetensors(&tensors, None))
        .unwrap();
    let Err(e) = MergedModel::new(lm, adapter, Box::new(Folder::new(&broken).unwrap()), MAX_SHARD_BYTES) else {
        panic!("merged without a weight")
    };
    assert_eq!(e.code, ErrorCode::MissingTensor);
    assert!(e.message.contains("model.layers.1.self_attn.q_proj.weight"), "{e}");
}

/// The chunk stream: files in order, each from offset 0 to its length, as a browser would write
/// them to disk.
#[test]
fn chunks_cover_each_file_in_order() {
    let base = fixtures().join("gpt2/base");
    let m = model(&base);
    let adapter = fixture_adapter(&m, "gpt2/ia3");
    let mut merged =
        MergedModel::new(Arc::clone(&m.lm), adapter, Box::new(Folder::new(&base).unwrap()), 200_000).unwrap();
    let planned: Vec<(String, u64)> = merged.files().into_iter().map(|(n, l)| (n.to_owned(), l)).collect();
    let mut seen: Vec<(String, u64)> = Vec::new();
    while let Some(chunk) = block(merged.next_chunk()).unwrap() {
        match seen.last_mut() {
            Some((name, len)) if *name == chunk.file => {
                assert_eq!(chunk.offset, *len);
                *len += chunk.bytes.len() as u64;
            }
            _ => {
                assert_eq!(chunk.offset, 0);
                seen.push((chunk.file.clone(), chunk.bytes.len() as u64));
            }
        }
        assert!(chunk.offset + chunk.bytes.len() as u64 <= chunk.file_len);
    }
    assert_eq!(seen, planned);
}
