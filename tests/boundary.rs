//! One schema at the wasm boundary: every struct the Rust side hands to JavaScript (or reads from
//! it) serialises exactly the field names that `npm/src/index.d.ts` declares, camelCase, and the
//! training options' documented defaults are the Rust defaults. Values come from the real set-up
//! code on the fixture model, so a renamed or added field on either side fails here.

mod common;

use std::collections::BTreeSet;

use common::dts::{documented_default, index_d_ts, interface, same_value};
use common::*;
use serde_json::Value;
use webtune::device::GpuInfo;
use webtune::generate::SamplingOptions;
use webtune::model::files::FileSource;
use webtune::model::files::Folder;
use webtune::model::{LinearShape, LoadOptions, Model, ModelShape};
use webtune::options::{DEFAULTS, Method, TrainingOptions};
use webtune::session::presets::Preset;
use webtune::session::{self, DataFile, RunFacts, Storage};
use webtune::train::StepMetrics;

fn keys(value: &Value) -> BTreeSet<String> {
    value.as_object().unwrap_or_else(|| panic!("not an object: {value}")).keys().cloned().collect()
}

/// `value`'s keys are exactly what `index.d.ts` declares for `name`, apart from `js_only` (fields
/// the JS engine adds itself).
fn assert_schema(source: &str, name: &str, value: &Value, js_only: &[&str]) {
    let declared: BTreeSet<String> =
        interface(source, name).into_keys().filter(|k| !js_only.contains(&k.as_str())).collect();
    assert_eq!(keys(value), declared, "{name}: the Rust side (left) and index.d.ts (right) differ");
}

fn json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap()
}

#[test]
fn training_options_match_training_config_with_the_same_defaults() {
    let source = index_d_ts();
    let defaults = json(&TrainingOptions::default());
    assert_schema(&source, "TrainingConfig", &defaults, &[]);
    for (key, field) in interface(&source, "TrainingConfig") {
        assert!(field.optional, "TrainingConfig.{key} must be optional: every option has a default");
        let rust = &defaults[&key];
        if rust.is_null() {
            continue; // computed (lr, targets) or absent (steps): the doc says what happens
        }
        let documented = documented_default(&field.doc)
            .unwrap_or_else(|| panic!("TrainingConfig.{key}: its doc must say `default {rust}`: {}", field.doc));
        assert!(same_value(&documented, rust), "TrainingConfig.{key}: documented default {documented}, Rust's {rust}");
    }
}

#[test]
fn what_the_wasm_side_returns_matches_index_d_ts() {
    let source = index_d_ts();
    let model = Model::load(&Folder::new(fixtures().join("llama/base")).unwrap(), &gpu()).unwrap();
    let (_, gpu_info) = webtune::device::gpu().unwrap();
    assert_schema(&source, "GpuInfo", &json(&gpu_info), &[]);
    assert_schema(&source, "ModelInfo", &json(&session::model_info(&model)), &["name"]);

    let options = TrainingOptions { dropout: 0.1, eval_split: 0.25, max_len: 64, ..DEFAULTS };
    let facts = json(&RunFacts::planned(model.lm.shape(), Storage::of(&model.lm), &options).unwrap());
    assert_schema(&source, "RunFacts", &facts, &[]);
    assert_schema(&source, "AdaptedLayer", &facts["layers"][0], &[]);
    assert_schema(&source, "MemoryEstimate", &facts["memory"], &[]);

    // A file with one malformed row: the report lists it, the preview shows it with its error.
    let mut rows = std::fs::read_to_string(fixtures().join("data/train.jsonl")).unwrap();
    rows.push_str("{\"prompt\": 1}\n");
    let data = DataFile { name: "rows.jsonl", bytes: rows.as_bytes() };
    let preview = json(&session::preview(&model, data, &options, 100).unwrap());
    assert_schema(&source, "DatasetPreview", &preview, &[]);
    let rows = preview["rows"].as_array().unwrap();
    let bad = rows.iter().find(|r| r.get("error").is_some()).expect("the malformed row is previewed");
    assert_schema(&source, "PreviewRow", bad, &[]);
    let good = &rows[0];
    assert_schema(&source, "PreviewRow", good, &["error"]);
    assert_schema(&source, "PreviewSegment", &good["segments"][0], &[]);
    assert_schema(&source, "DatasetReport", &preview["report"], &[]);
    assert_schema(&source, "RowError", &preview["report"]["badRows"][0], &[]);

    let skip = TrainingOptions { skip_bad_rows: true, ..options };
    let run = block(session::prepare(&model, data, None, &skip, None)).unwrap();
    assert_schema(&source, "TrainReport", &json(&run.report), &[]);
    assert_schema(&source, "AdapterInfo", &json(&session::adapter_info(run.trainer.adapter())), &[]);

    let metrics = StepMetrics {
        step: 1,
        total_steps: 2,
        epoch: 0.5,
        loss: 1.0,
        lr: 1e-3,
        grad_norm: 0.5,
        tokens: 10,
        supervised_tokens: 4,
        eval_loss: Some(1.5),
        early_stopped: true,
    };
    assert_schema(&source, "StepMetrics", &json(&metrics), &["tokensPerSecond", "elapsedMs", "etaMs"]);
    assert_eq!(json(&StepMetrics { eval_loss: None, early_stopped: false, ..metrics }).get("evalLoss"), None);

    assert_schema(&source, "GenerateOptions", &json(&SamplingOptions::default()), &["adapter", "chat", "signal"]);

    let qwen3 = Preset::find("qwen3-0.6b").unwrap();
    assert_schema(&source, "ModelPreset", &json(&qwen3.info()), &[]);
    // A GPU whose bindings hold 8 MiB cannot take Qwen3's 12 MiB MLP matrices: `problem` says so.
    let small = GpuInfo { max_storage_buffer_binding_size: 8 << 20, ..gpu_info };
    let facts = json(&qwen3.facts(&TrainingOptions::default(), &LoadOptions::default(), &small).unwrap());
    assert!(facts["problem"].as_str().unwrap().contains("Qwen/Qwen3-0.6B/model.safetensors"), "{facts}");
    assert_schema(&source, "PresetFacts", &facts, &[]);
}

/// What the page knows of a model from its config.json alone is what loading it gives: the same
/// linear layers (paths, slots, sizes, layouts) and parameter count, for every architecture.
#[test]
fn a_config_alone_gives_the_loaded_models_shape() {
    for name in ["llama", "qwen2", "qwen3", "gemma3", "gpt2"] {
        let folder = Folder::new(fixtures().join(name).join("base")).unwrap();
        let model = Model::load(&folder, &gpu()).unwrap();
        let config = webtune::model::ModelConfig::from_json(&folder.read_text("config.json").unwrap()).unwrap();
        let shape = ModelShape::of(config);
        assert_eq!(shape.parameters, model.lm.parameter_count(), "{name}");
        let loaded: Vec<LinearShape> = model
            .lm
            .linears()
            .iter()
            .map(|l| LinearShape {
                path: l.path.clone(),
                slot: l.slot,
                in_features: l.in_features,
                out_features: l.out_features,
                layout: l.layout,
            })
            .collect();
        assert_eq!(shape.linears, loaded, "{name}");
        assert_eq!(&shape.linears, &model.lm.shape().linears, "{name}");
    }
}

#[test]
fn run_facts_count_what_the_adapter_trains() {
    for (name, options) in [
        ("llama", TrainingOptions { targets: Some(vec!["k_proj".into(), "down_proj".into()]), ..DEFAULTS }),
        ("gpt2", TrainingOptions { rank_pattern: [("c_attn".to_owned(), 3)].into(), ..DEFAULTS }),
        ("qwen2", TrainingOptions { method: Method::PromptTuning, virtual_tokens: 5, ..DEFAULTS }),
        ("llama", TrainingOptions { dora: true, ..DEFAULTS }),
        ("qwen2", TrainingOptions { method: Method::Ia3, ..DEFAULTS }),
        ("gpt2", TrainingOptions { method: Method::Ia3, ..DEFAULTS }),
        ("llama", TrainingOptions { method: Method::SeqBn, reduction_factor: 4.0, ..DEFAULTS }),
        ("gpt2", TrainingOptions { method: Method::DoubleSeqBn, ..DEFAULTS }),
    ] {
        let model = Model::load(&Folder::new(fixtures().join(name).join("base")).unwrap(), &gpu()).unwrap();
        let planned = RunFacts::planned(model.lm.shape(), Storage::of(&model.lm), &options).unwrap();
        let data = std::fs::read(fixtures().join("data/train.jsonl")).unwrap();
        let run = block(session::prepare(&model, DataFile { name: "train.jsonl", bytes: &data }, None, &options, None))
            .unwrap();
        let trainable = run.trainer.adapter().trainable_parameters();
        assert_eq!(planned.trainable_parameters, trainable, "{name}");
        assert_eq!(run.report.facts.trainable_parameters, trainable, "{name}");
        assert_eq!(planned.layers, run.report.facts.layers, "{name}");
        assert!(!planned.layers.is_empty() || options.method == Method::PromptTuning, "{name}");
        let per_module: usize = planned.layers.iter().map(|l| l.parameters).sum();
        assert_eq!(per_module + planned.virtual_tokens * model.lm.config.hidden_size, trainable, "{name}");
        for layer in planned.layers.iter().filter(|l| l.kind != "bottleneck") {
            let linear = model.lm.linears().iter().find(|l| l.path == layer.path).unwrap();
            assert_eq!((layer.in_features, layer.out_features), (linear.in_features, linear.out_features));
        }
        // The loaded data is smaller than the largest workload the options allow.
        assert!(run.report.facts.memory.activations < planned.memory.activations, "{name}");
        assert_eq!(run.report.facts.memory.weights, 4 * model.lm.parameter_count() as u64);
    }
}
