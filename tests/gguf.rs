//! GGUF LoRA export for llama.cpp: the files parse, carry the metadata and tensor names
//! llama.cpp's adapter loader requires, pass its shape checks, and, read the way llama.cpp reads
//! them (`scale = adapter.lora.alpha / b.ne[0]`, delta `b·a`), add exactly the PEFT adapter's
//! delta to llama.cpp's converted base weights: the HF delta with the row permutation that
//! `convert_hf_to_gguf.py` applies to Llama's q/k weights, and untransposed for GPT-2's Conv1D
//! (llama.cpp stores those weights as `[out, in]`, the orientation of PEFT's `B·A`).

mod common;

use std::collections::BTreeSet;

use burn::tensor::{Distribution, Tensor};

use common::gguf_reader::{GGML_TYPE_F32, GgufFile, GgufValue, read_gguf};
use common::*;
use webtune::ErrorCode;
use webtune::model::files::Folder;
use webtune::model::{Model, ModelConfig};
use webtune::peft::files::{self, import};
use webtune::peft::gguf::export_gguf;
use webtune::peft::lora::LoraModule;
use webtune::peft::{Adapter, LoraAdapter, LoraConfig, LoraInit};

const TOLERANCE: f64 = 1e-6;

fn model(name: &str) -> Model {
    Model::load(&Folder::new(fixtures().join(name).join("base")).unwrap(), &gpu()).unwrap()
}

fn fixture_adapter(model: &Model, name: &str, method: &str) -> Adapter {
    let dir = fixtures().join(name).join(method).join("final");
    let config = std::fs::read_to_string(dir.join(files::CONFIG_FILE)).unwrap();
    let weights = std::fs::read(dir.join(files::WEIGHTS_FILE)).unwrap();
    block(import(&config, &weights, &model.lm)).unwrap()
}

fn export(adapter: &Adapter, config: &ModelConfig) -> Vec<u8> {
    block(export_gguf(adapter, config)).unwrap()
}

fn lora(adapter: &Adapter) -> &LoraAdapter {
    match adapter {
        Adapter::Lora(l) => l,
        _ => panic!("expected a LoRA adapter"),
    }
}

/// The GGUF base tensor a HF module path maps to (constants.py / tensor_mapping.py).
fn gguf_base_name(path: &str) -> String {
    const NAMES: [(&str, &str); 11] = [
        ("self_attn.q_proj", "attn_q"),
        ("self_attn.k_proj", "attn_k"),
        ("self_attn.v_proj", "attn_v"),
        ("self_attn.o_proj", "attn_output"),
        ("mlp.gate_proj", "ffn_gate"),
        ("mlp.up_proj", "ffn_up"),
        ("mlp.down_proj", "ffn_down"),
        ("attn.c_attn", "attn_qkv"),
        ("attn.c_proj", "attn_output"),
        ("mlp.c_fc", "ffn_up"),
        ("mlp.c_proj", "ffn_down"),
    ];
    let rest = path.strip_prefix("model.layers.").or_else(|| path.strip_prefix("transformer.h.")).unwrap();
    let (layer, module) = rest.split_once('.').unwrap();
    let (_, name) = NAMES.iter().find(|(hf, _)| *hf == module).unwrap();
    format!("blk.{layer}.{name}.weight")
}

/// `scale · B·A` as `[out, in]`, from row-major `A [r, in]` and `B [out, r]`.
fn delta(a: &[f32], b: &[f32], fan_in: usize, fan_out: usize, scale: f64) -> Vec<f64> {
    let rank = a.len() / fan_in;
    let mut d = vec![0.0; fan_out * fan_in];
    for o in 0..fan_out {
        for k in 0..rank {
            let bk = b[o * rank + k] as f64;
            for i in 0..fan_in {
                d[o * fan_in + i] += bk * a[k * fan_in + i] as f64;
            }
        }
    }
    d.iter().map(|x| x * scale).collect()
}

/// The delta llama.cpp adds to the base tensor `base` (`[out, in]`), checked as its loader checks
/// the pair against a base tensor with `ne = [in, out]`.
fn gguf_delta(file: &GgufFile, base: &str, fan_in: usize, fan_out: usize) -> Vec<f64> {
    let (a_name, b_name) = (format!("{base}.lora_a"), format!("{base}.lora_b"));
    let a = file.tensor(&a_name).unwrap_or_else(|| panic!("no {a_name}"));
    let b = file.tensor(&b_name).unwrap_or_else(|| panic!("no {b_name}"));
    assert_eq!(a.dims[0], fan_in as u64, "{a_name}: ne[0] must be the base tensor's ne[0]");
    assert_eq!(b.dims[1], fan_out as u64, "{b_name}: ne[1] must be the base tensor's ne[1]");
    assert_eq!(a.dims[1], b.dims[0], "{base}: lora_a ne[1] must equal lora_b ne[0] (the rank)");
    let GgufValue::F32(alpha) = file.metadata["adapter.lora.alpha"] else { panic!("adapter.lora.alpha is not f32") };
    let scale = alpha as f64 / b.dims[0] as f64;
    delta(&file.tensor_f32(&a_name).unwrap(), &file.tensor_f32(&b_name).unwrap(), fan_in, fan_out, scale)
}

/// `LlamaModel.permute(w, n_head, n_head_kv)` of convert_hf_to_gguf.py on a `[rows, cols]` matrix:
/// `w.reshape(heads, 2, rows/heads/2, cols).swapaxes(1, 2).reshape(rows, cols)`.
fn llama_permute(w: &[f64], rows: usize, cols: usize, heads: usize) -> Vec<f64> {
    let half = rows / heads / 2;
    let mut out = vec![0.0; w.len()];
    for h in 0..heads {
        for two in 0..2 {
            for i in 0..half {
                // Source index (h, two, i) of the reshaped tensor lands at (h, i, two).
                let src = (h * 2 + two) * half + i;
                let dst = (h * half + i) * 2 + two;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// What convert_hf_to_gguf does to the rows of this layer's base weight: Llama's q/k permutation.
fn like_converted_base(delta: Vec<f64>, path: &str, config: &ModelConfig, fan_in: usize) -> Vec<f64> {
    let fan_out = delta.len() / fan_in;
    match (config.architecture, path.rsplit('.').next().unwrap()) {
        (webtune::model::Architecture::Llama, "q_proj") => llama_permute(&delta, fan_out, fan_in, config.num_heads),
        (webtune::model::Architecture::Llama, "k_proj") => llama_permute(&delta, fan_out, fan_in, config.num_kv_heads),
        _ => delta,
    }
}

/// Largest absolute difference; NaN anywhere makes it NaN (and so fails every `<` check).
fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, |w, d| if w.is_nan() || d.is_nan() { f64::NAN } else { w.max(d) })
}

fn alpha_of(file: &GgufFile) -> f32 {
    match file.metadata["adapter.lora.alpha"] {
        GgufValue::F32(a) => a,
        ref other => panic!("adapter.lora.alpha is {other:?}"),
    }
}

/// The file's delta for every module equals the module's own PEFT delta (`scale·(BA − B₀A₀)` for
/// PiSSA) after the base conversion's permutation, with the rank llama.cpp sees.
fn assert_gguf_matches_adapter(
    file: &GgufFile,
    adapter: &LoraAdapter,
    m: &Model,
    exported_rank: impl Fn(&LoraModule) -> usize,
) {
    for module in &adapter.modules {
        let linear = &m.lm.linears()[module.slot];
        let (fan_in, fan_out) = (linear.in_features, linear.out_features);
        let mut expected = delta(&floats(module.a.clone()), &floats(module.b.clone()), fan_in, fan_out, module.scale);
        if let Some((a0, b0)) = &module.pissa_initial {
            let initial = delta(&floats(a0.clone()), &floats(b0.clone()), fan_in, fan_out, module.scale);
            expected.iter_mut().zip(initial).for_each(|(e, i)| *e -= i);
        }
        let expected = like_converted_base(expected, &module.path, &m.lm.config, fan_in);
        let base = gguf_base_name(&module.path);
        assert_eq!(
            file.tensor(&format!("{base}.lora_b")).unwrap().dims[0],
            exported_rank(module) as u64,
            "{base} rank"
        );
        let err = max_diff(&gguf_delta(file, &base, fan_in, fan_out), &expected);
        assert!(err < TOLERANCE, "{}: GGUF delta differs from PEFT's by {err}", module.path);
    }
}

/// Every fixture LoRA (Qwen3 and Gemma 3 on all 7 linears) exports under llama.cpp's architecture
/// name (`qwen3`, `gemma3` as `convert_hf_to_gguf.py`'s `Qwen3Model` / `Gemma3Model` write it) with
/// the base tensor names and, Llama's q/k alone, the base conversion's row permutation.
#[test]
fn fixture_loras_export_as_llama_cpp_adapters() {
    for name in MODELS.into_iter().chain(WAVE2_MODELS) {
        let m = model(name);
        let adapter = fixture_adapter(&m, name, "lora");
        let bytes = export(&adapter, &m.lm.config);
        let file = read_gguf(&bytes).unwrap();

        let keys: Vec<&str> = file.metadata.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "adapter.lora.alpha",
                "adapter.type",
                "general.architecture",
                "general.quantization_version",
                "general.type"
            ],
            "{name}"
        );
        let text = |s: &str| GgufValue::String(s.to_owned());
        assert_eq!(file.metadata["general.architecture"], text(name), "{name}");
        assert_eq!(file.metadata["general.type"], text("adapter"));
        assert_eq!(file.metadata["adapter.type"], text("lora"));
        assert_eq!(file.metadata["general.quantization_version"], GgufValue::U32(2));

        // The PEFT files themselves, read independently of webtune's importer.
        let dir = fixtures().join(name).join("lora").join("final");
        let peft_config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(files::CONFIG_FILE)).unwrap()).unwrap();
        let peft_alpha = peft_config["lora_alpha"].as_f64().unwrap();
        let scale = peft_alpha / peft_config["r"].as_f64().unwrap();
        assert_eq!(alpha_of(&file) as f64, peft_alpha, "{name}: plain LoRA keeps lora_alpha");
        let peft = read_reference(&dir.join(files::WEIGHTS_FILE));

        let modules = &lora(&adapter).modules;
        let expected_names: BTreeSet<String> = modules
            .iter()
            .flat_map(|module| {
                let base = gguf_base_name(&module.path);
                [format!("{base}.lora_a"), format!("{base}.lora_b")]
            })
            .collect();
        let names: BTreeSet<String> = file.tensors.iter().map(|t| t.name.clone()).collect();
        assert_eq!(file.tensors.len(), 2 * modules.len(), "{name}: one lora_a and one lora_b per module");
        assert_eq!(names, expected_names, "{name}");
        for t in &file.tensors {
            assert_eq!(t.ggml_type, GGML_TYPE_F32, "{}", t.name);
            assert_eq!(t.offset % 32, 0, "{}: data must be 32-byte aligned", t.name);
        }

        for module in modules {
            let linear = &m.lm.linears()[module.slot];
            let (fan_in, fan_out) = (linear.in_features, linear.out_features);
            let a = &peft[&format!("base_model.model.{}.lora_A.weight", module.path)];
            let b = &peft[&format!("base_model.model.{}.lora_B.weight", module.path)];
            let rank = a.shape[0];
            assert_eq!((&a.shape[..], &b.shape[..]), (&[rank, fan_in][..], &[fan_out, rank][..]));
            let base = gguf_base_name(&module.path);
            // ggml dims are the torch shape reversed.
            assert_eq!(file.tensor(&format!("{base}.lora_a")).unwrap().dims, [fan_in as u64, rank as u64]);
            assert_eq!(file.tensor(&format!("{base}.lora_b")).unwrap().dims, [rank as u64, fan_out as u64]);

            let hf_delta = delta(&a.f32s(), &b.f32s(), fan_in, fan_out, scale);
            let expected = like_converted_base(hf_delta, &module.path, &m.lm.config, fan_in);
            let got = gguf_delta(&file, &base, fan_in, fan_out);
            let err = max_diff(&got, &expected);
            assert!(
                err < TOLERANCE,
                "{name} {}: GGUF delta differs from the permuted PEFT delta by {err}",
                module.path
            );
            assert!(
                expected.iter().any(|x| x.abs() > 1e-3),
                "{name} {}: the fixture delta should not be ~0",
                module.path
            );
        }
    }
}

#[test]
fn pissa_exports_as_a_plain_rank_2r_lora() {
    let m = model("llama");
    let config = LoraConfig {
        target_modules: vec!["q_proj".into(), "k_proj".into(), "down_proj".into()],
        init: LoraInit::Pissa { niter: None },
        ..LoraConfig::default()
    };
    let initial = Adapter::Lora(block(LoraAdapter::init(&m.lm, config, 3)).unwrap());
    // Stand-in for training: A and B move away from the initial A₀, B₀.
    let trained = initial.with_params(initial.params().into_iter().map(|(_, t)| t.mul_scalar(1.1)).collect());
    let file_bytes = export(&trained, &m.lm.config);
    let file = read_gguf(&file_bytes).unwrap();
    assert_eq!(alpha_of(&file), 32.0, "the conversion to rank 2r doubles alpha (r=8, alpha=16)");
    assert_gguf_matches_adapter(&file, lora(&trained), &m, |module| 2 * module.rank());
}

#[test]
fn llama_cpp_alpha_reproduces_rslora_and_rank_pattern_scales() {
    let m = model("llama");
    let perturbed_lora = |config: LoraConfig| {
        let adapter = Adapter::Lora(block(LoraAdapter::init(&m.lm, config, 5)).unwrap());
        // B starts at zero: perturb A and B as training would.
        let perturb =
            |t: Tensor<2>| t.clone() + Tensor::random(t.shape(), Distribution::Normal(0.0, 0.05), &t.device());
        adapter.with_params(adapter.params().into_iter().map(|(_, t)| perturb(t)).collect())
    };
    let targets = vec!["q_proj".to_owned(), "v_proj".to_owned(), "o_proj".to_owned()];

    let rslora =
        perturbed_lora(LoraConfig { target_modules: targets.clone(), use_rslora: true, ..LoraConfig::default() });
    let file_bytes = export(&rslora, &m.lm.config);
    let file = read_gguf(&file_bytes).unwrap();
    assert!((alpha_of(&file) as f64 - 16.0 * 8f64.sqrt()).abs() < 1e-4, "rsLoRA's alpha/√r is alpha·√r / r");
    assert_gguf_matches_adapter(&file, lora(&rslora), &m, LoraModule::rank);

    let mut config = LoraConfig { target_modules: targets, ..LoraConfig::default() };
    config.rank_pattern.insert("v_proj".into(), 4);
    let ranked = perturbed_lora(config.clone());
    let file_bytes = export(&ranked, &m.lm.config);
    let file = read_gguf(&file_bytes).unwrap();
    assert_eq!(alpha_of(&file), 16.0, "llama.cpp divides by each layer's own rank");
    assert_eq!(file.tensor("blk.0.attn_v.weight.lora_b").unwrap().dims, [4, 32]);
    assert_gguf_matches_adapter(&file, lora(&ranked), &m, LoraModule::rank);

    for (what, adapter) in [
        ("rsLoRA with rank_pattern", perturbed_lora(LoraConfig { use_rslora: true, ..config.clone() })),
        ("alpha_pattern", perturbed_lora(LoraConfig { alpha_pattern: [("o_proj".to_owned(), 4.0)].into(), ..config })),
    ] {
        let err = block(export_gguf(&adapter, &m.lm.config)).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidOptions, "{what}");
        assert!(err.message.contains("one adapter.lora.alpha"), "{what}: {}", err.message);
    }
    // llama.cpp would read alpha 0 as "unscaled" rather than as a zero delta.
    let err = block(export_gguf(
        &perturbed_lora(LoraConfig { alpha: 0.0, target_modules: vec!["q_proj".into()], ..LoraConfig::default() }),
        &m.lm.config,
    ))
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidOptions);
    assert!(err.message.contains("lora_alpha 0"), "{}", err.message);
}

#[test]
fn prompt_tuning_is_refused() {
    let m = model("llama");
    let adapter = fixture_adapter(&m, "llama", "prompt_tuning_random");
    let err = block(export_gguf(&adapter, &m.lm.config)).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidOptions);
    assert_eq!(
        err.message,
        "GGUF export is for plain LoRA adapters; llama.cpp cannot load a prompt_tuning adapter. Export it as PEFT files"
    );
}

#[test]
fn truncated_or_foreign_files_fail_to_read() {
    let m = model("llama");
    let bytes = export(&fixture_adapter(&m, "llama", "lora"), &m.lm.config);
    for len in 0..bytes.len() {
        let err = read_gguf(&bytes[..len]).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidAdapter, "{len} bytes");
        assert!(err.message.starts_with("not a complete GGUF file"), "{len} bytes: {}", err.message);
    }
    let mut foreign = bytes.clone();
    foreign[..4].copy_from_slice(b"PK\x03\x04");
    let err = read_gguf(&foreign).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidAdapter);
    assert!(err.message.starts_with("not a GGUF file"), "{}", err.message);
}

/// A GGUF header with `kvs` (key, value type, value bytes) and no tensors.
fn header_only(version: u32, kvs: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend(version.to_le_bytes());
    out.extend(0u64.to_le_bytes());
    out.extend((kvs.len() as u64).to_le_bytes());
    for (key, value_type, value) in kvs {
        out.extend((key.len() as u64).to_le_bytes());
        out.extend(key.as_bytes());
        out.extend(value_type.to_le_bytes());
        out.extend(*value);
    }
    out
}

#[test]
fn the_reader_rejects_what_llama_cpp_rejects() {
    let message = |bytes: &[u8]| read_gguf(bytes).unwrap_err().message;
    let (u8_type, u32_type) = (0, 4);
    assert!(
        message(&header_only(3, &[("general.alignment", u32_type, &24u32.to_le_bytes())])).contains("power of two")
    );
    assert!(message(&header_only(3, &[("k", u8_type, &[1]), ("k", u8_type, &[2])])).contains("appears twice"));
    assert!(message(&header_only(2, &[])).contains("version 2"));
    assert!(read_gguf(&header_only(3, &[("general.alignment", u32_type, &64u32.to_le_bytes())])).is_ok());
}
