//! Bad model folders get an error with a stable code that names the file and the tensor, and a
//! sharded or prefix-less checkpoint loads to the same logits.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use webtune::ErrorCode;
use webtune::device::GpuInfo;
use webtune::model::files::{FileSource, Folder};
use webtune::model::weights::{HostTensor, encode_safetensors, read_host_tensors};
use webtune::model::{LoadOptions, Model, NoAdapter, WeightsDtype};

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

/// Found by fuzzing (`fuzz/regressions/tokenizer/`): tokenizers 0.22 panics ("Helper") on a JSON
/// syntax error inside the `decoder` object instead of returning an error.
#[test]
fn tokenizer_with_a_control_character_in_its_decoder() {
    let dir = copy_model("llama", "decoder-control-character");
    let json = std::fs::read_to_string(dir.join("tokenizer.json")).unwrap();
    let decoder = json.find("\"decoder\"").expect("the fixture tokenizer has a decoder");
    let broken = format!("{}{}", &json[..decoder], json[decoder..].replacen("ByteLevel", "B\u{1}yteLevel", 1));
    assert_ne!(json, broken, "the fixture tokenizer's decoder is ByteLevel");
    std::fs::write(dir.join("tokenizer.json"), broken).unwrap();
    assert_error(&load(&dir), ErrorCode::InvalidTokenizer, &["tokenizer.json", "not valid JSON"]);
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

/// A model folder that records how many bytes were read from it: what failed "before any large
/// allocation" read headers only.
struct CountingFolder {
    folder: Folder,
    read: std::cell::Cell<u64>,
}

impl CountingFolder {
    fn new(dir: &Path) -> Self {
        CountingFolder { folder: Folder::new(dir).unwrap(), read: std::cell::Cell::new(0) }
    }
}

impl FileSource for CountingFolder {
    fn exists(&self, name: &str) -> bool {
        self.folder.exists(name)
    }

    fn read(&self, name: &str) -> webtune::Result<Vec<u8>> {
        let bytes = self.folder.read(name)?;
        self.read.set(self.read.get() + bytes.len() as u64);
        Ok(bytes)
    }

    fn describe(&self) -> String {
        self.folder.describe()
    }

    fn size(&self, name: &str) -> webtune::Result<u64> {
        self.folder.size(name)
    }

    fn read_range(&self, name: &str, start: u64, len: usize) -> webtune::Result<Vec<u8>> {
        self.read.set(self.read.get() + len as u64);
        self.folder.read_range(name, start, len)
    }
}

/// Loads `dir` with `options`, expecting an error, and checks that no weight data was read: at
/// most the config, tokenizer files and safetensors headers.
fn refused(dir: &Path, options: &LoadOptions) -> webtune::Error {
    let source = CountingFolder::new(dir);
    let error = match Model::load_with(&source, &gpu(), options) {
        Ok(_) => panic!("{} loaded although the device cannot hold it", dir.display()),
        Err(e) => e,
    };
    let weights = std::fs::metadata(dir.join("model.safetensors")).map_or(0, |m| m.len());
    let small_files: u64 = ["config.json", "tokenizer.json", "tokenizer_config.json"]
        .iter()
        .map(|f| std::fs::metadata(dir.join(f)).map_or(0, |m| m.len()))
        .sum();
    let header = 8 + u64::from_le_bytes(std::fs::read(dir.join("model.safetensors")).unwrap()[..8].try_into().unwrap());
    assert!(
        source.read.get() <= small_files + header,
        "read {} bytes of a {weights}-byte checkpoint before refusing it: {error}",
        source.read.get()
    );
    error
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(path, config.to_string()).unwrap();
}

/// The fixture's weights re-saved in BF16, as hub checkpoints are.
fn write_bf16(dir: &Path) {
    let tensors = weights(dir);
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, t)| {
            let data = t.data.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect();
            (name.clone(), t.shape.clone(), data)
        })
        .collect();
    let views = bytes.iter().map(|(name, shape, data)| {
        (name.as_str(), safetensors::tensor::TensorView::new(safetensors::Dtype::BF16, shape.clone(), data).unwrap())
    });
    std::fs::write(dir.join("model.safetensors"), safetensors::serialize(views, None).unwrap()).unwrap();
}

/// The device as recorded, with changes.
fn device_with(change: impl FnOnce(&mut GpuInfo)) -> LoadOptions {
    let mut info = webtune::device::info_of(&gpu());
    change(&mut info);
    LoadOptions { device: Some(info), ..LoadOptions::default() }
}

#[test]
fn multimodal_gemma3_names_text_only_checkpoints() {
    let dir = copy_model("gemma3", "gemma3-multimodal");
    edit_config(&dir, |c| {
        c["model_type"] = "gemma3".into();
        c["architectures"] = serde_json::json!(["Gemma3ForConditionalGeneration"]);
    });
    let e = load(&dir);
    assert_error(
        &e,
        ErrorCode::UnsupportedArchitecture,
        &["config.json", "gemma3_text", "google/gemma-3-270m", "gemma-3-1b-it"],
    );
}

#[test]
fn gemma3_without_layer_types() {
    // Older configs say the same with sliding_window_pattern, which transformers expands.
    let dir = copy_model("gemma3", "gemma3-pattern");
    let expected = logits(&dir);
    edit_config(&dir, |c| {
        c.as_object_mut().unwrap().remove("layer_types");
    });
    assert_eq!(logits(&dir), expected, "sliding_window_pattern 2 gives layer_types [sliding, full, sliding]");
    // With neither, which layers slide is unknown (transformers would silently assume 6).
    edit_config(&dir, |c| {
        let c = c.as_object_mut().unwrap();
        c.remove("sliding_window_pattern");
        c.remove("_sliding_window_pattern");
    });
    assert_error(&load(&dir), ErrorCode::InvalidConfig, &["config.json", "layer_types", "sliding_window_pattern"]);
}

#[test]
fn absurd_config_sizes_fail_at_once() {
    gpu(); // acquire the device before timing
    for (key, value) in
        [("num_hidden_layers", 1_000_000_000u64), ("vocab_size", 1_000_000_000_000), ("hidden_size", 1 << 40)]
    {
        let dir = copy_model("llama", &format!("absurd-{key}"));
        edit_config(&dir, |c| c[key] = value.into());
        let start = std::time::Instant::now();
        let e = refused(&dir, &LoadOptions::default());
        println!("{key} = {value}: refused in {:.1} ms: {e}", start.elapsed().as_secs_f64() * 1e3);
        assert_error(&e, ErrorCode::InvalidConfig, &["config.json", key, &value.to_string()]);
    }
}

#[test]
fn config_that_disagrees_with_the_weights_is_refused_before_reading_them() {
    let dir = copy_model("qwen3", "more-layers");
    edit_config(&dir, |c| c["num_hidden_layers"] = 40.into());
    assert_error(
        &refused(&dir, &LoadOptions::default()),
        ErrorCode::InvalidConfig,
        &["num_hidden_layers = 40", "2 decoder layers"],
    );

    let dir = copy_model("gemma3", "wider");
    edit_config(&dir, |c| c["intermediate_size"] = 4096.into());
    assert_error(
        &refused(&dir, &LoadOptions::default()),
        ErrorCode::ShapeMismatch,
        &["model.safetensors", "mlp.", "192]", "4096]"],
    );
}

#[test]
fn bf16_checkpoint_uses_f16_storage_or_falls_back_and_says_so() {
    let dir = copy_model("gemma3", "bf16");
    write_bf16(&dir);
    let with_f16 = Model::load(&Folder::new(&dir).unwrap(), &gpu()).unwrap();
    assert_eq!(with_f16.lm.report.checkpoint_dtype, "BF16");
    assert_eq!(with_f16.lm.report.weights_dtype, "f16", "{:?}", with_f16.lm.report);
    let without_f16 =
        Model::load_with(&Folder::new(&dir).unwrap(), &gpu(), &device_with(|d| d.shader_f16 = false)).unwrap();
    let report = &without_f16.lm.report;
    assert_eq!(report.weights_dtype, "f32");
    assert!(report.reason.contains("no shader-f16"), "{report:?}");
    assert!(report.weight_bytes > with_f16.lm.report.weight_bytes * 19 / 10, "{report:?}");
    // BF16 values are exact in f16 at these magnitudes: both widths compute the same logits.
    let ids = [375, 27, 340, 73, 88, 71, 361];
    let f16_logits = floats(with_f16.lm.forward(&ids, 1, None, &NoAdapter).unwrap());
    let f32_logits = floats(without_f16.lm.forward(&ids, 1, None, &NoAdapter).unwrap());
    let diff = max_abs_diff(&f16_logits, &f32_logits);
    println!("gemma3 BF16 checkpoint: max |logit f16 storage − f32 storage| = {diff:.3e}");
    assert!(diff < 1e-5, "{diff}");

    // Forcing f16 where the device cannot compute in it is an error, not a silent fallback.
    let forced = LoadOptions { weights_dtype: WeightsDtype::F16, ..device_with(|d| d.shader_f16 = false) };
    assert_error(&refused(&dir, &forced), ErrorCode::InvalidOptions, &["f16", "shader-f16", "\"auto\""]);
}

#[test]
fn bf16_checkpoint_that_only_fits_in_f16_is_refused_without_shader_f16() {
    let dir = copy_model("gemma3", "bf16-no-room");
    write_bf16(&dir);
    let bf16_bytes = std::fs::metadata(dir.join("model.safetensors")).unwrap().len();
    // Room for the weights at 2 bytes each but not at 4.
    let options = device_with(|d| {
        d.shader_f16 = false;
        d.memory_bytes = Some(bf16_bytes * 3 / 2);
    });
    assert_error(&refused(&dir, &options), ErrorCode::Gpu, &["GiB", "no shader-f16", "smaller model"]);
}

#[test]
fn tensor_larger_than_the_binding_limit_is_refused() {
    // The MLP weights (192 × 64 × 4 bytes = 48 KiB) cannot be split; the embedding could be.
    let dir = copy_model("gemma3", "small-binding");
    let options = LoadOptions { max_binding_bytes: Some(40_000), ..LoadOptions::default() };
    assert_error(
        &refused(&dir, &options),
        ErrorCode::Gpu,
        &["model.safetensors", "mlp.", "MiB", "maxStorageBufferBindingSize"],
    );
    let options = device_with(|d| d.max_buffer_size = 40_000);
    assert_error(&refused(&dir, &options), ErrorCode::Gpu, &["maxBufferSize"]);
}
