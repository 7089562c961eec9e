//! Files of the DoRA, IA3 and bottleneck methods: AdapterHub's files are reproduced byte for byte,
//! PEFT's round-trip, fresh adapters start where the references start, and bad input (foreign
//! adapters, pickles, unknown options, methods asked of modules or formats that cannot take them)
//! gets a clear error that names the file, key or option.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::*;
use webtune::ErrorCode;
use webtune::model::Model;
use webtune::model::files::Folder;
use webtune::model::weights::read_host_tensors;
use webtune::peft::bottleneck::NonLinearity;
use webtune::peft::gguf::export_gguf;
use webtune::peft::{
    Adapter, BottleneckAdapter, BottleneckConfig, BottleneckInit, ExportFormat, Ia3Adapter, Ia3Config, LoraAdapter,
    LoraConfig, ReductionFactor, adapterhub, files, read_adapter,
};

fn model(name: &str) -> Model {
    Model::load(&Folder::new(fixtures().join(name).join("base")).unwrap(), &gpu()).unwrap()
}

fn read(dir: &Path, model: &Model) -> webtune::Result<Adapter> {
    block(read_adapter(&Folder::new(dir).unwrap(), &model.lm))
}

fn adapterhub_run(model: &str, run: &str) -> PathBuf {
    fixtures().join("adapterhub").join(model).join(run)
}

fn assert_error(result: webtune::Result<impl Sized>, code: ErrorCode, mentions: &[&str]) -> webtune::Error {
    let Err(e) = result else { panic!("expected an error mentioning {mentions:?}") };
    assert_eq!(e.code, code, "unexpected code for: {e}");
    for m in mentions {
        assert!(e.message.contains(m), "message should mention {m:?}: {e}");
    }
    e
}

/// A scratch copy of a fixture adapter folder, to be damaged by a test.
fn copy_adapter(from: &Path, name: &str) -> PathBuf {
    let dir = scratch(name);
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    dir
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut value: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut value);
    std::fs::write(path, serde_json::to_string_pretty(&value).unwrap()).unwrap();
}

/// `save_adapter(dir, name, with_head=False, use_safetensors=True)`: both files identical, for
/// the initial and the trained adapters of all four reference runs.
#[test]
fn adapterhub_export_is_byte_identical() {
    for (model_name, run) in
        [("llama", "seq_bn"), ("llama", "double_seq_bn"), ("gpt2", "seq_bn"), ("gpt2", "double_seq_bn")]
    {
        let m = model(model_name);
        for stage in ["initial", "final"] {
            let dir = adapterhub_run(model_name, run).join(stage);
            let Adapter::Bottleneck(adapter) = read(&dir, &m).unwrap() else { panic!("bottleneck adapter expected") };
            let saved = block(adapterhub::export(&adapter, &format!("fixtures/{model_name}/base"))).unwrap();
            let what = format!("{model_name}/{run}/{stage}");
            assert_eq!(
                saved.config_json,
                std::fs::read_to_string(dir.join(adapterhub::CONFIG_FILE)).unwrap(),
                "{what}"
            );
            assert!(saved.weights == std::fs::read(dir.join(adapterhub::WEIGHTS_FILE)).unwrap(), "{what}: weights");
        }
    }
}

/// Fresh adapters have the reference's keys, shapes, placement and (for the deterministic inits)
/// values; bert-initialised ones have the reference's spread.
#[test]
fn fresh_bottleneck_adapters_match_adapterhub_layout() {
    for (model_name, run) in [("llama", "seq_bn"), ("gpt2", "double_seq_bn")] {
        let m = model(model_name);
        let rf = ReductionFactor::Uniform(8.0);
        let config = match run {
            "seq_bn" => BottleneckConfig::seq_bn(run, rf),
            _ => BottleneckConfig::double_seq_bn(run, rf),
        };
        let ours = BottleneckAdapter::init(&m.lm, config, 42).unwrap();
        let saved = block(adapterhub::export(&ours, &format!("fixtures/{model_name}/base"))).unwrap();
        let dir = adapterhub_run(model_name, run).join("initial");
        assert_eq!(saved.config_json, std::fs::read_to_string(dir.join(adapterhub::CONFIG_FILE)).unwrap());
        let ours = read_host_tensors("ours", &saved.weights).unwrap();
        let theirs = read_host_tensors("ref", &std::fs::read(dir.join(adapterhub::WEIGHTS_FILE)).unwrap()).unwrap();
        assert_eq!(ours.keys().collect::<Vec<_>>(), theirs.keys().collect::<Vec<_>>());
        for (key, t) in &ours {
            assert_eq!(t.shape, theirs[key].shape, "{key}");
            let std = (t.data.iter().map(|v| v * v).sum::<f32>() / t.data.len() as f32).sqrt();
            if key.ends_with("bias") {
                assert!(t.data.iter().all(|&v| v == 0.0), "{key}");
            } else {
                assert!((std - 0.02).abs() < 0.004, "{key}: std {std}");
            }
        }
    }
    // mam_adapter starts as an exact identity; houlsby stays within ±0.02.
    let m = model("llama");
    for init in [BottleneckInit::MamAdapter, BottleneckInit::Houlsby] {
        let config = BottleneckConfig {
            init_weights: init,
            ..BottleneckConfig::double_seq_bn("a", ReductionFactor::Uniform(16.0))
        };
        let adapter = BottleneckAdapter::init(&m.lm, config, 1).unwrap();
        for (key, t) in adapter.params() {
            let v = floats(t);
            match (init, key.contains("adapter_up") || key.ends_with("bias")) {
                (BottleneckInit::MamAdapter, true) => assert!(v.iter().all(|&x| x == 0.0), "{key}"),
                (BottleneckInit::MamAdapter, false) => assert!(v.iter().all(|&x| x.abs() <= 0.125), "{key}"),
                (_, _) => assert!(v.iter().all(|&x| x.abs() <= 0.02), "{key}"),
            }
        }
        let ids = [375, 27, 340, 73, 88, 71, 361];
        let logits = |a: &Adapter| floats(m.lm.logits(a.hidden(&m.lm, &ids, 1, None, None).unwrap()));
        if init == BottleneckInit::MamAdapter {
            assert_eq!(logits(&Adapter::Bottleneck(adapter)), logits(&Adapter::none(&m.lm)));
        }
    }
}

/// AdapterHub has reference runs for Llama and GPT-2 only; on Qwen2, Qwen3 and Gemma 3 (q/k
/// norms, four norms per layer, sliding windows) both layouts must still start as the identity
/// with `mam_adapter` and give every tensor a gradient with `bert`.
#[test]
fn bottleneck_adapters_on_every_architecture() {
    let ids = [5, 17, 42, 9, 63, 2, 11, 30];
    for model_name in ["qwen2", "qwen3", "gemma3"] {
        let m = model(model_name);
        let logits = |a: &Adapter| m.lm.logits(a.hidden(&m.lm, &ids, 1, None, None).unwrap());
        for layout in ["seq_bn", "double_seq_bn"] {
            let rf = ReductionFactor::Uniform(8.0);
            let config = match layout {
                "seq_bn" => BottleneckConfig::seq_bn(layout, rf),
                _ => BottleneckConfig::double_seq_bn(layout, rf),
            };
            let identity = BottleneckConfig { init_weights: BottleneckInit::MamAdapter, ..config.clone() };
            let identity = Adapter::Bottleneck(BottleneckAdapter::init(&m.lm, identity, 1).unwrap());
            let base = floats(logits(&Adapter::none(&m.lm)));
            assert_eq!(floats(logits(&identity)), base, "{model_name} {layout}: mam_adapter is not the identity");
            let adapter = Adapter::Bottleneck(BottleneckAdapter::init(&m.lm, config, 2).unwrap()).tracked();
            let out = logits(&adapter);
            let loss = (out.clone() * out).sum();
            assert!(floats(loss.clone().detach().inner())[0].is_finite(), "{model_name} {layout}");
            let grads = loss.backward();
            for (key, t) in adapter.params() {
                let g =
                    floats(t.grad(&grads).unwrap_or_else(|| panic!("{model_name} {layout}: no gradient for {key}")));
                let norm = g.iter().map(|v| v * v).sum::<f32>().sqrt();
                assert!(norm.is_finite() && norm > 0.0, "{model_name} {layout} {key}: gradient norm {norm}");
            }
        }
    }
}

/// Per-layer reduction factors, as AdapterHub's `{"<layer>": rf, "default": rf}`, and leave_out.
#[test]
fn per_layer_reduction_factor_and_leave_out() {
    let m = model("llama");
    let rf = ReductionFactor::PerLayer { layers: BTreeMap::from([(1, 4.0)]), default: Some(16.0) };
    let config = BottleneckConfig { leave_out: vec![0], ..BottleneckConfig::double_seq_bn("x", rf) };
    let adapter = BottleneckAdapter::init(&m.lm, config, 0).unwrap();
    let shapes: Vec<(String, Vec<usize>)> = adapter.params().into_iter().map(|(k, t)| (k, t.dims().to_vec())).collect();
    assert_eq!(shapes.len(), 8, "{shapes:?}");
    assert!(shapes.iter().all(|(k, _)| k.starts_with("model.layers.1.")), "{shapes:?}");
    assert_eq!(shapes[0].1, [16, 64]);
    // The mapping survives export and import.
    let saved = block(adapterhub::export(&adapter, "m")).unwrap();
    assert!(saved.config_json.contains("\"reduction_factor\": {\n      \"1\": 4,\n      \"default\": 16\n    }"));
    let back = adapterhub::import(&saved.config_json, &saved.weights, &m.lm).unwrap();
    assert_eq!(back.config, adapter.config);
    let no_default = ReductionFactor::PerLayer { layers: BTreeMap::from([(1, 4.0)]), default: None };
    let err = BottleneckAdapter::init(&m.lm, BottleneckConfig::seq_bn("x", no_default), 0);
    assert_error(err, ErrorCode::InvalidOptions, &["reduction_factor", "layer 0", "default"]);
}

/// PEFT's DoRA and IA3 files: exporting an imported adapter gives the same keys, shapes and values
/// as the reference file, and a config that PEFT reads as the same adapter.
#[test]
fn peft_dora_and_ia3_files_round_trip() {
    for (model_name, method) in
        [("llama", "dora"), ("qwen2", "dora"), ("llama", "ia3"), ("qwen2", "ia3"), ("gpt2", "ia3")]
    {
        let m = model(model_name);
        let dir = fixtures().join(model_name).join(method).join("final");
        let adapter = read(&dir, &m).unwrap();
        let saved =
            block(files::export(&adapter, &format!("fixtures/{model_name}/base"), false, &Default::default())).unwrap();
        let (_, metadata) = safetensors::SafeTensors::read_metadata(&saved.weights).unwrap();
        assert_eq!(metadata.metadata().as_ref().unwrap()["format"], "pt");
        let ours = read_host_tensors("ours", &saved.weights).unwrap();
        let theirs = read_host_tensors("ref", &std::fs::read(dir.join(files::WEIGHTS_FILE)).unwrap()).unwrap();
        assert_eq!(ours, theirs, "{model_name}/{method}");
        let ours: serde_json::Value = serde_json::from_str(&saved.config_json).unwrap();
        let theirs: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(files::CONFIG_FILE)).unwrap()).unwrap();
        let as_set = |v: &serde_json::Value| {
            let mut items: Vec<String> = v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect();
            items.sort();
            items
        };
        let mut keys = vec!["peft_type", "fan_in_fan_out", "task_type", "base_model_name_or_path"];
        keys.extend(if method == "dora" {
            ["r", "lora_alpha", "use_dora", "use_rslora", "init_lora_weights"].as_slice()
        } else {
            ["init_ia3_weights"].as_slice()
        });
        for key in keys {
            assert_eq!(ours[key], theirs[key], "{model_name}/{method}: {key}");
        }
        assert_eq!(as_set(&ours["target_modules"]), as_set(&theirs["target_modules"]));
        if method == "ia3" {
            assert_eq!(as_set(&ours["feedforward_modules"]), as_set(&theirs["feedforward_modules"]));
        }
        assert!(saved.readme.contains(if method == "dora" { "DoRA" } else { "IA3" }));
    }
}

/// New IA3 and DoRA adapters start where PEFT's do: IA3 with PEFT's default modules and vectors
/// of ones; DoRA with the magnitude = the row norms of W (B = 0), so both start as the base.
#[test]
fn fresh_ia3_and_dora_match_peft_initial() {
    for model_name in ["llama", "qwen2", "gpt2"] {
        let m = model(model_name);
        let config = Ia3Config::for_model_type(m.lm.config.architecture.name()).unwrap();
        let ours = Adapter::Ia3(Ia3Adapter::init(&m.lm, config).unwrap());
        let theirs = read(&fixtures().join(model_name).join("ia3/initial"), &m).unwrap();
        let values = |a: &Adapter| a.params().into_iter().map(|(k, t)| (k, floats(t))).collect::<Vec<_>>();
        assert_eq!(values(&ours), values(&theirs), "{model_name}");
    }
    for model_name in ["llama", "qwen2"] {
        let m = model(model_name);
        let Adapter::Lora(reference) = read(&fixtures().join(model_name).join("dora/initial"), &m).unwrap() else {
            panic!("LoRA adapter expected")
        };
        // The reference's A and B with a freshly computed magnitude.
        let mut plain = reference.clone();
        plain.modules.iter_mut().for_each(|module| module.magnitude = None);
        let ours = plain.with_dora(&m.lm).unwrap();
        for (a, b) in ours.modules.iter().zip(&reference.modules) {
            let (ours, theirs) = (floats(a.magnitude.clone().unwrap()), floats(b.magnitude.clone().unwrap()));
            assert!(max_abs_diff(&ours, &theirs) < 1e-5, "{}: {}", a.path, max_abs_diff(&ours, &theirs));
        }
    }
}

#[test]
fn adapterhub_adapter_for_another_model_is_refused() {
    let llama = model("llama");
    // A GPT-2 adapter: its config names gpt2.
    let gpt2_adapter = adapterhub_run("gpt2", "seq_bn").join("final");
    assert_error(read(&gpt2_adapter, &llama), ErrorCode::InvalidAdapter, &["model_type", "gpt2", "llama"]);
    // Another hidden size.
    let dir = copy_adapter(&adapterhub_run("llama", "seq_bn").join("final"), "ah-hidden");
    edit_json(&dir.join("adapter_config.json"), |c| c["hidden_size"] = 128.into());
    assert_error(read(&dir, &llama), ErrorCode::InvalidAdapter, &["adapter_config.json", "hidden_size", "128", "64"]);
    // Without the model fields, the keys give it away.
    let dir = copy_adapter(&gpt2_adapter, "ah-keys");
    edit_json(&dir.join("adapter_config.json"), |c| {
        let c = c.as_object_mut().unwrap();
        c.remove("model_type");
        c.remove("hidden_size");
    });
    assert_error(
        read(&dir, &llama),
        ErrorCode::InvalidAdapter,
        &["adapter.safetensors", "model.layers.0.output_adapters.adapters.seq_bn.adapter_down.0.weight"],
    );
    // A tensor of the wrong size is named with both shapes.
    let qwen = model("qwen2");
    let dir = copy_adapter(&adapterhub_run("llama", "double_seq_bn").join("final"), "ah-rf");
    edit_json(&dir.join("adapter_config.json"), |c| {
        c["model_type"] = "qwen2".into();
        c["config"]["reduction_factor"] = 16.into();
    });
    assert_error(read(&dir, &qwen), ErrorCode::InvalidAdapter, &["adapter_down.0.weight", "[8, 64]", "[4, 64]"]);
}

#[test]
fn pickled_adapters_are_refused_with_how_to_resave() {
    let m = model("llama");
    let dir = copy_adapter(&adapterhub_run("llama", "seq_bn").join("final"), "ah-pickle");
    std::fs::rename(dir.join("adapter.safetensors"), dir.join("pytorch_adapter.bin")).unwrap();
    let e = assert_error(read(&dir, &m), ErrorCode::InvalidAdapter, &["pytorch_adapter.bin", "pickle"]);
    assert!(e.message.contains("use_safetensors=True"), "{e}");
    // A pickle under the safetensors name is recognised too (torch.save writes a zip).
    std::fs::write(dir.join("adapter.safetensors"), b"PK\x03\x04 torch zip archive").unwrap();
    assert_error(read(&dir, &m), ErrorCode::InvalidAdapter, &["adapter.safetensors", "use_safetensors=True"]);
    // PEFT's pickle.
    let dir = copy_adapter(&fixtures().join("llama/ia3/final"), "peft-pickle");
    std::fs::rename(dir.join("adapter_model.safetensors"), dir.join("adapter_model.bin")).unwrap();
    assert_error(read(&dir, &m), ErrorCode::InvalidAdapter, &["adapter_model.bin", "pickle", "save_pretrained"]);
}

#[test]
fn unknown_non_linearity_is_refused() {
    let m = model("llama");
    let dir = copy_adapter(&adapterhub_run("llama", "seq_bn").join("final"), "ah-act");
    edit_json(&dir.join("adapter_config.json"), |c| c["config"]["non_linearity"] = "softsign".into());
    assert_error(read(&dir, &m), ErrorCode::InvalidAdapter, &["adapter_config.json", "non_linearity", "softsign"]);
    let config = BottleneckConfig {
        non_linearity: "swishy".into(),
        ..BottleneckConfig::seq_bn("a", ReductionFactor::Uniform(8.0))
    };
    assert_error(BottleneckAdapter::init(&m.lm, config, 0), ErrorCode::InvalidOptions, &["non_linearity", "swishy"]);
    // Old adapter-transformers files (no "version") mean gelu_new by "gelu", as AdapterHub reads them.
    let dir = copy_adapter(&adapterhub_run("llama", "seq_bn").join("final"), "ah-old");
    edit_json(&dir.join("adapter_config.json"), |c| {
        c["config"]["non_linearity"] = "gelu".into();
        c.as_object_mut().unwrap().remove("version");
    });
    let Adapter::Bottleneck(old) = read(&dir, &m).unwrap() else { panic!() };
    assert_eq!(old.config.non_linearity, "gelu_new");
    assert_eq!(NonLinearity::parse("Swish").unwrap(), NonLinearity::Silu);
    // Features webtune does not implement are named.
    edit_json(&dir.join("adapter_config.json"), |c| c["config"]["use_gating"] = true.into());
    assert_error(read(&dir, &m), ErrorCode::InvalidAdapter, &["use_gating"]);
}

#[test]
fn dora_and_ia3_refuse_modules_that_cannot_take_them() {
    let m = model("llama");
    let lora = LoraConfig { target_modules: vec!["q_proj".into(), "embed_tokens".into()], ..LoraConfig::default() };
    let plain = block(LoraAdapter::init(&m.lm, lora, 0)).unwrap();
    assert_error(plain.with_dora(&m.lm), ErrorCode::InvalidOptions, &["DoRA", "embed_tokens", "q_proj"]);
    let ia3 = Ia3Config {
        target_modules: vec!["v_proj".into(), "lm_head".into()],
        ..Ia3Config::for_model_type("llama").unwrap()
    };
    assert_error(Ia3Adapter::init(&m.lm, ia3), ErrorCode::InvalidOptions, &["IA3", "lm_head"]);
    let ia3 = Ia3Config { feedforward_modules: vec!["up_proj".into()], ..Ia3Config::for_model_type("llama").unwrap() };
    assert_error(Ia3Adapter::init(&m.lm, ia3), ErrorCode::InvalidOptions, &["feedforward_modules", "up_proj"]);
    assert_error(Ia3Config::for_model_type("t5"), ErrorCode::InvalidOptions, &["t5", "target"]);
    // The same in files: a DoRA config naming a norm, an IA3 config naming the embedding.
    let dir = copy_adapter(&fixtures().join("llama/dora/final"), "dora-norm");
    edit_json(&dir.join("adapter_config.json"), |c| {
        c["target_modules"] = serde_json::json!(["q_proj", "k_proj", "v_proj", "o_proj", "input_layernorm"])
    });
    assert_error(read(&dir, &m), ErrorCode::InvalidAdapter, &["adapter_config.json", "input_layernorm", "DoRA"]);
    let dir = copy_adapter(&fixtures().join("llama/ia3/final"), "ia3-embed");
    edit_json(&dir.join("adapter_config.json"), |c| {
        c["target_modules"] = serde_json::json!(["k_proj", "v_proj", "down_proj", "embed_tokens"])
    });
    assert_error(read(&dir, &m), ErrorCode::InvalidAdapter, &["adapter_config.json", "embed_tokens", "IA3"]);
    // An IA3 vector of the wrong orientation is named.
    let dir = copy_adapter(&fixtures().join("llama/ia3/final"), "ia3-ff");
    edit_json(&dir.join("adapter_config.json"), |c| c["feedforward_modules"] = serde_json::json!([]));
    assert_error(read(&dir, &m), ErrorCode::InvalidAdapter, &["down_proj.ia3_l", "[1, 176]", "[64, 1]"]);
}

#[test]
fn gguf_is_refused_for_methods_llama_cpp_cannot_load() {
    for (model_name, run, method) in [
        ("llama", fixtures().join("llama/dora/final"), "dora"),
        ("llama", fixtures().join("llama/ia3/final"), "ia3"),
        ("gpt2", adapterhub_run("gpt2", "double_seq_bn").join("final"), "double_seq_bn"),
    ] {
        let m = model(model_name);
        let adapter = read(&run, &m).unwrap();
        assert!(!adapter.export_formats().contains(&ExportFormat::Gguf));
        assert_eq!(adapter.method(), method);
        let e = assert_error(block(export_gguf(&adapter, &m.lm.config)), ErrorCode::InvalidOptions, &["GGUF", method]);
        assert!(e.message.contains("plain LoRA"), "{e}");
    }
    // Bottleneck adapters have no PEFT files either.
    let m = model("llama");
    let adapter = read(&adapterhub_run("llama", "seq_bn").join("final"), &m).unwrap();
    assert_error(
        block(files::export(&adapter, "m", false, &Default::default())),
        ErrorCode::InvalidOptions,
        &["AdapterHub"],
    );
}

/// Training continues from exported files: import(export(a)) has a's values.
#[test]
fn exported_adapters_import_unchanged() {
    let m = model("gpt2");
    let config = BottleneckConfig {
        non_linearity: "gelu_new".into(),
        ..BottleneckConfig::double_seq_bn("mine", ReductionFactor::Uniform(6.0))
    };
    let adapter = BottleneckAdapter::init(&m.lm, config, 3).unwrap();
    let saved = block(adapterhub::export(&adapter, "base")).unwrap();
    let dir = scratch("ah-roundtrip");
    std::fs::write(dir.join(adapterhub::CONFIG_FILE), &saved.config_json).unwrap();
    std::fs::write(dir.join(adapterhub::WEIGHTS_FILE), &saved.weights).unwrap();
    let back = read(&dir, &m).unwrap();
    let values = |a: &Adapter| a.params().into_iter().map(|(k, t)| (k, floats(t))).collect::<Vec<_>>();
    let original = Adapter::Bottleneck(adapter);
    assert_eq!(values(&back), values(&original));
    assert_eq!(back.trainable_parameters(), 2 * 2 * (10 * 64 + 10 + 64 * 10 + 64));
}
