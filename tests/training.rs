//! Training behaviour beyond the PEFT fixtures: frozen base, PiSSA, accumulation, schedules,
//! clipping, early stopping, checkpoint resume, adapter files round trips and their errors.

mod common;

use std::collections::BTreeMap;

use common::*;
use webtune::ErrorCode;
use webtune::data::{DataOptions, Example, load_dataset};
use webtune::model::Model;
use webtune::model::files::Folder;
use webtune::model::weights::read_host_tensors;
use webtune::options::DEFAULTS;
use webtune::peft::files::{self, ModelCard, export, import};
use webtune::peft::{Adapter, LoraAdapter, LoraConfig, LoraInit, PromptAdapter, PromptConfig, PromptInit};
use webtune::train::{EarlyStopping, Grads, Schedule, StepMetrics, TrainConfig, Trainer, evaluate, loss_sum};

fn model(name: &str) -> Model {
    Model::load(&Folder::new(fixtures().join(name).join("base")).unwrap(), &gpu()).unwrap()
}

fn examples(model: &Model, file: &str) -> Vec<Example> {
    let bytes = std::fs::read(fixtures().join("data").join(file)).unwrap();
    let options = DataOptions { max_len: 64, template: None, skip_bad_rows: false };
    load_dataset(file, &bytes, &model.tokenizer, &options).unwrap().examples
}

fn lora(model: &Model, targets: &[&str], init: LoraInit) -> Adapter {
    let config =
        LoraConfig { target_modules: targets.iter().map(|s| s.to_string()).collect(), init, ..LoraConfig::default() };
    Adapter::Lora(block(LoraAdapter::init(&model.lm, config, 7)).unwrap())
}

fn config(steps: usize) -> TrainConfig {
    TrainConfig {
        lr: 1e-2,
        schedule: Schedule::Constant,
        max_steps: Some(steps),
        clip: None,
        shuffle: false,
        ..DEFAULTS.train_config().unwrap()
    }
}

fn train(model: &Model, adapter: Adapter, config: TrainConfig) -> (Trainer, Vec<StepMetrics>) {
    let train = examples(model, "train.jsonl");
    let eval = examples(model, "eval.jsonl");
    let mut trainer = Trainer::new(model.lm.clone(), adapter, train, eval, config, model.pad_id()).unwrap();
    let mut metrics = Vec::new();
    while !trainer.is_done() {
        metrics.push(block(trainer.step()).unwrap());
    }
    (trainer, metrics)
}

fn params(adapter: &Adapter) -> Vec<Vec<f32>> {
    adapter.params().into_iter().map(|(_, t)| floats(t)).collect()
}

fn max_param_diff(a: &Adapter, b: &Adapter) -> f32 {
    let (a, b) = (params(a), params(b));
    assert_eq!(a.len(), b.len(), "the adapters have different numbers of tensors");
    worst_of(a.iter().zip(&b).map(|(x, y)| max_abs_diff(x, y)))
}

fn logits(model: &Model, adapter: &Adapter) -> Vec<f32> {
    let ids = model.tokenizer.encode("Reverse: rhwf -> fwhr", false).unwrap();
    floats(model.lm.logits(adapter.hidden(&model.lm, &ids, 1, None, None).unwrap()))
}

#[test]
fn only_adapter_tensors_get_gradients_and_the_base_stays_frozen() {
    let m = model("llama");
    let base_before = logits(&m, &Adapter::none(&m.lm));
    let vocabulary: Vec<u32> = (0..m.lm.config.vocab_size as u32).collect();
    let embeddings_before = floats(m.lm.embed(&vocabulary).unwrap());
    let adapter = lora(&m, &["q_proj", "v_proj", "down_proj"], LoraInit::Gaussian).tracked();
    let batch =
        webtune::data::Batch::collate(&examples(&m, "train.jsonl").iter().take(4).collect::<Vec<_>>(), m.pad_id());
    let (sum, _) = loss_sum(&m.lm, &adapter, &batch).unwrap().unwrap();
    let grads = sum.backward();
    for linear in m.lm.linears() {
        assert!(linear.weight_out_in().grad(&grads).is_none(), "{} got a gradient", linear.path);
    }
    for (key, t) in adapter.params() {
        assert!(t.grad(&grads).is_some(), "{key} has no gradient");
    }
    let (trainer, _) = train(&m, lora(&m, &["q_proj"], LoraInit::Default), config(3));
    assert_ne!(logits(&m, trainer.adapter()), base_before, "training changed nothing");
    assert_eq!(logits(&m, &Adapter::none(&m.lm)), base_before, "the base model changed");
    assert_eq!(floats(m.lm.embed(&vocabulary).unwrap()), embeddings_before, "the embedding table changed");
}

#[test]
fn pissa_starts_at_the_base_model_and_converts_to_plain_lora() {
    for name in ["llama", "gpt2"] {
        let m = model(name);
        let targets: &[&str] = if name == "gpt2" { &["c_attn", "c_proj"] } else { &["q_proj", "k_proj", "o_proj"] };
        let pissa = lora(&m, targets, LoraInit::Pissa { niter: None });
        let base = logits(&m, &Adapter::none(&m.lm));
        assert!(max_abs_diff(&logits(&m, &pissa), &base) < 1e-4, "{name}: PiSSA init must not change the model");

        // A and B hold the top singular directions: scale·BA is the best rank-r approximation,
        // so it captures more of W than any other rank-r product (e.g. a random one).
        let Adapter::Lora(l) = &pissa else { unreachable!() };
        let module = &l.modules[0];
        let linear = &m.lm.linears()[module.slot];
        let w = floats(linear.weight_out_in());
        let ba = floats(module.b.clone().matmul(module.a.clone()) * module.scale);
        let residual: f32 = w.iter().zip(&ba).map(|(x, y)| (x - y).powi(2)).sum();
        let total: f32 = w.iter().map(|x| x * x).sum();
        assert!(residual < total * 0.9, "{name}: the rank-8 part should capture the top of the spectrum");

        let (trainer, _) = train(&m, pissa, config(4));
        let trained = logits(&m, trainer.adapter());
        for as_lora in [true, false] {
            let saved = block(export(trainer.adapter(), "base", as_lora, &ModelCard::default())).unwrap();
            let config: serde_json::Value = serde_json::from_str(&saved.config_json).unwrap();
            assert_eq!(config["r"], if as_lora { 16 } else { 8 });
            assert_eq!(
                config["init_lora_weights"],
                if as_lora { serde_json::json!(true) } else { serde_json::json!("pissa") }
            );
            let reloaded = block(import(&saved.config_json, &saved.weights, &m.lm)).unwrap();
            let err = max_abs_diff(&logits(&m, &reloaded), &trained);
            assert!(err < 1e-4, "{name}: reloaded PiSSA (as_lora {as_lora}) differs by {err}");
        }
    }
}

#[test]
fn randomized_pissa_is_close_to_exact() {
    let m = model("qwen2");
    let exact = lora(&m, &["q_proj"], LoraInit::Pissa { niter: None });
    let fast = lora(&m, &["q_proj"], LoraInit::Pissa { niter: Some(16) });
    assert!(max_abs_diff(&logits(&m, &fast), &logits(&m, &Adapter::none(&m.lm))) < 1e-4);
    let product = |a: &Adapter| {
        let Adapter::Lora(l) = a else { unreachable!() };
        floats(l.modules[0].b.clone().matmul(l.modules[0].a.clone()))
    };
    let (e, f) = (product(&exact), product(&fast));
    let norm = e.iter().map(|x| x * x).sum::<f32>().sqrt();
    let diff = e.iter().zip(&f).map(|(x, y)| (x - y).powi(2)).sum::<f32>().sqrt();
    assert!(diff / norm < 0.5, "randomized PiSSA strays from the exact one: {diff} / {norm}");
}

#[test]
fn gradient_accumulation_equals_a_larger_batch() {
    let m = model("qwen2");
    let adapter = lora(&m, &["q_proj", "v_proj"], LoraInit::Gaussian);
    let big = TrainConfig { batch_size: 4, grad_accum: 1, ..config(2) };
    let small = TrainConfig { batch_size: 2, grad_accum: 2, ..config(2) };
    let (a, ma) = train(&m, adapter.clone(), big);
    let (b, mb) = train(&m, adapter, small);
    for (x, y) in ma.iter().zip(&mb) {
        assert!((x.loss - y.loss).abs() < 1e-5, "loss {} vs {}", x.loss, y.loss);
        assert!((x.grad_norm - y.grad_norm).abs() < 1e-5);
        assert_eq!(x.supervised_tokens, y.supervised_tokens);
    }
    assert!(max_param_diff(a.adapter(), b.adapter()) < 1e-5);
}

#[test]
fn recomputed_layers_give_the_gradients_of_one_backward_pass() {
    // LoRA with dropout (the recomputed layer must draw the masks the first pass drew): autodiff
    // keeps one gradient per tensor.
    let per_tensor = recomputed_and_kept_gradients(0.1);
    assert!(per_tensor.iter().all(|grads| matches!(grads, Grads::PerTensor(_))));
}

#[test]
fn plain_lora_gradients_arrive_end_to_end_in_one_buffer() {
    // Without dropout each LoRA layer is one fused node that adds its factors' gradients to the
    // step's buffer: across micro-batches and layers recomputed one at a time as well.
    let flat = recomputed_and_kept_gradients(0.0);
    assert!(flat.iter().all(|grads| matches!(grads, Grads::Flat(_))));
}

/// A trained LoRA's gradients with gradient accumulation, kept and with recomputed layers, on
/// Gemma 3 (sliding layers, q/k norms, four norms per layer): compared, then returned.
fn recomputed_and_kept_gradients(dropout: f64) -> [Grads; 2] {
    let m = model("gemma3");
    let lora_config = LoraConfig {
        target_modules: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "down_proj"].map(String::from).to_vec(),
        init: LoraInit::Gaussian,
        dropout,
        ..LoraConfig::default()
    };
    let initial = Adapter::Lora(block(LoraAdapter::init(&m.lm, lora_config, 7)).unwrap());
    // A few steps first, so that B is not zero and dropout changes what each layer passes on.
    let (trained, _) = train(&m, initial, config(3));
    let adapter = trained.adapter().clone();
    let train = examples(&m, "train.jsonl");
    let trainer = |recompute_layers: bool| {
        let config = TrainConfig { batch_size: 2, grad_accum: 2, recompute_layers, ..config(1) };
        Trainer::new(m.lm.clone(), adapter.clone(), train.clone(), Vec::new(), config, m.pad_id()).unwrap()
    };
    let kept = trainer(false).next_gradients().unwrap();
    let recomputed = trainer(true).next_gradients().unwrap();
    let losses = [kept.loss_sum, recomputed.loss_sum].map(|t| floats(t)[0]);
    assert!((losses[0] - losses[1]).abs() < 1e-4 * losses[0].abs(), "loss sums {losses:?}");
    let as_tensors = |grads: &Grads| grads.clone().per_tensor(&adapter);
    let (kept_grads, recomputed_grads) = (as_tensors(&kept.grads), as_tensors(&recomputed.grads));
    assert_eq!(kept_grads.len(), adapter.params().len());
    for ((key, _), (g, r)) in adapter.params().iter().zip(kept_grads.into_iter().zip(recomputed_grads)) {
        assert_gradient_close(&format!("gradient of {key}"), &floats(r), &floats(g));
    }
    [kept.grads, recomputed.grads]
}

#[test]
fn schedules_warm_up_from_zero_and_decay() {
    let m = model("gpt2");
    let adapter = lora(&m, &["c_attn"], LoraInit::Default);
    for schedule in [Schedule::Constant, Schedule::Linear, Schedule::Cosine] {
        let config = TrainConfig { schedule, warmup_steps: 2, lr: 1e-3, ..config(6) };
        let (_, metrics) = train(&m, adapter.clone(), config);
        let lrs: Vec<f64> = metrics.iter().map(|s| s.lr).collect();
        assert_eq!(lrs[0], 0.0);
        assert!((lrs[1] - 5e-4).abs() < 1e-12);
        assert!((lrs[2] - 1e-3).abs() < 1e-12, "{schedule:?}: {lrs:?}");
        match schedule {
            Schedule::Constant => assert!(lrs[2..].iter().all(|&lr| (lr - 1e-3).abs() < 1e-12)),
            _ => assert!(lrs[2..].windows(2).all(|w| w[1] < w[0]) && lrs[5] > 0.0, "{schedule:?}: {lrs:?}"),
        }
    }
}

#[test]
fn clipping_reports_the_unclipped_norm_and_bounds_the_update() {
    let m = model("llama");
    let adapter = lora(&m, &["q_proj", "v_proj"], LoraInit::Gaussian);
    let unclipped = train(&m, adapter.clone(), config(1)).1[0].grad_norm;
    let (_, metrics) = train(&m, adapter, TrainConfig { clip: Some(unclipped / 10.0), ..config(1) });
    assert!((metrics[0].grad_norm - unclipped).abs() < 1e-6 * unclipped.max(1.0));
}

#[test]
fn early_stopping_restores_the_best_adapter() {
    let m = model("llama");
    let adapter = lora(&m, &["q_proj", "k_proj", "v_proj", "o_proj"], LoraInit::Default);
    // A learning rate this large makes the eval loss rise after the first steps.
    let config = TrainConfig {
        lr: 0.5,
        eval_every: Some(1),
        early_stopping: Some(EarlyStopping { patience: 2, threshold: 0.0 }),
        ..config(40)
    };
    let (trainer, metrics) = train(&m, adapter, config);
    assert!(metrics.last().unwrap().early_stopped, "training should stop early");
    assert!(metrics.len() < 40);
    let evals: Vec<f64> = metrics.iter().filter_map(|s| s.eval_loss).collect();
    let best = evals.iter().copied().fold(f64::INFINITY, f64::min);
    assert_eq!(trainer.best_eval_loss(), Some(best));
    let restored = block(trainer.evaluate()).unwrap();
    assert!((restored - best).abs() < 1e-5, "restored adapter evaluates to {restored}, best was {best}");
}

#[test]
fn resuming_from_a_checkpoint_reaches_the_same_adapter() {
    let m = model("gpt2");
    let adapter = {
        let config = LoraConfig { target_modules: vec!["c_attn".into()], dropout: 0.1, ..LoraConfig::default() };
        Adapter::Lora(block(LoraAdapter::init(&m.lm, config, 3)).unwrap())
    };
    let config = TrainConfig {
        shuffle: true,
        batch_size: 3,
        grad_accum: 2,
        clip: Some(1.0),
        schedule: Schedule::Cosine,
        warmup_steps: 2,
        ..config(6)
    };
    let (straight, straight_metrics) = train(&m, adapter.clone(), config.clone());

    let train_rows = examples(&m, "train.jsonl");
    let eval_rows = examples(&m, "eval.jsonl");
    let mut first =
        Trainer::new(m.lm.clone(), adapter.clone(), train_rows.clone(), eval_rows.clone(), config.clone(), m.pad_id())
            .unwrap();
    for _ in 0..3 {
        block(first.step()).unwrap();
    }
    let checkpoint = block(first.checkpoint()).unwrap();
    drop(first);
    // A trainer further on, with its next step's passes already issued (`Trainer::prefetch`),
    // rewinds to the checkpoint: the issued step must not be applied.
    let mut rewound =
        Trainer::new(m.lm.clone(), adapter.clone(), train_rows.clone(), eval_rows.clone(), config.clone(), m.pad_id())
            .unwrap();
    for _ in 0..5 {
        block(rewound.step()).unwrap();
    }
    rewound.restore(&checkpoint).unwrap();
    let after_rewind = block(rewound.step()).unwrap();
    let expected = &straight_metrics[3];
    assert!((after_rewind.loss - expected.loss).abs() < 1e-6, "rewound: {} vs {}", after_rewind.loss, expected.loss);
    assert!((after_rewind.grad_norm - expected.grad_norm).abs() < 1e-6 * expected.grad_norm.max(1.0));
    drop(rewound);
    let mut resumed = Trainer::new(m.lm.clone(), adapter, train_rows, eval_rows, config.clone(), m.pad_id()).unwrap();
    resumed.restore(&checkpoint).unwrap();
    assert_eq!(resumed.steps_done(), 3);
    let mut tail = Vec::new();
    while !resumed.is_done() {
        tail.push(block(resumed.step()).unwrap());
    }
    assert_eq!(tail.len(), 3);
    for (a, b) in tail.iter().zip(&straight_metrics[3..]) {
        assert!((a.loss - b.loss).abs() < 1e-6, "step {}: {} vs {}", a.step, a.loss, b.loss);
    }
    assert!(max_param_diff(resumed.adapter(), straight.adapter()) < 1e-6);

    // A checkpoint of another run is refused, and a damaged one is reported.
    let other = TrainConfig { seed: 1, ..config };
    let mut wrong =
        Trainer::new(m.lm.clone(), straight.adapter().clone(), examples(&m, "train.jsonl"), vec![], other, m.pad_id())
            .unwrap();
    assert_eq!(wrong.restore(&checkpoint).unwrap_err().code, ErrorCode::InvalidOptions);
    assert!(wrong.restore(&checkpoint[..checkpoint.len() / 2]).is_err());
}

#[test]
fn exported_files_look_like_peft_and_round_trip() {
    for (name, targets) in [("llama", vec!["q_proj", "k_proj", "v_proj", "o_proj"]), ("gpt2", vec!["c_attn", "c_proj"])]
    {
        let m = model(name);
        let adapter = lora(&m, &targets, LoraInit::Default);
        let saved = block(export(&adapter, &format!("fixtures/{name}/base"), false, &ModelCard::default())).unwrap();
        let ours: serde_json::Value = serde_json::from_str(&saved.config_json).unwrap();
        let reference_dir = fixtures().join(name).join("lora/final");
        let peft: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(reference_dir.join(files::CONFIG_FILE)).unwrap()).unwrap();
        for key in [
            "peft_type",
            "task_type",
            "r",
            "lora_alpha",
            "fan_in_fan_out",
            "use_rslora",
            "use_dora",
            "bias",
            "base_model_name_or_path",
            "init_lora_weights",
            "lora_dropout",
            "inference_mode",
        ] {
            assert_eq!(ours[key], peft[key], "{name}: {key}");
        }
        let set = |v: &serde_json::Value| -> std::collections::BTreeSet<String> {
            v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect()
        };
        assert_eq!(set(&ours["target_modules"]), set(&peft["target_modules"]));
        assert!(saved.config_json.starts_with("{\n  \"alpha_pattern\""), "sorted keys, 2-space indent");

        let shapes = |bytes: &[u8]| -> BTreeMap<String, Vec<usize>> {
            read_host_tensors("adapter", bytes).unwrap().into_iter().map(|(k, t)| (k, t.shape)).collect()
        };
        let reference = std::fs::read(reference_dir.join(files::WEIGHTS_FILE)).unwrap();
        assert_eq!(shapes(&saved.weights), shapes(&reference), "{name}: keys and shapes");
        let (_, metadata) = safetensors::SafeTensors::read_metadata(&saved.weights).unwrap();
        assert_eq!(metadata.metadata().as_ref().unwrap()["format"], "pt");
        assert!(saved.readme.contains("library_name: peft"));

        let reloaded = block(import(&saved.config_json, &saved.weights, &m.lm)).unwrap();
        assert_eq!(params(&reloaded), params(&adapter));
    }
    let m = model("qwen2");
    let config = PromptConfig { num_virtual_tokens: 5, init: PromptInit::SampleVocab };
    let prompt = Adapter::Prompt(PromptAdapter::init(&m.lm, &m.tokenizer, config, 1).unwrap());
    let saved = block(export(&prompt, "base", false, &ModelCard::default())).unwrap();
    let reloaded = block(import(&saved.config_json, &saved.weights, &m.lm)).unwrap();
    assert_eq!(params(&reloaded), params(&prompt));
    assert!(saved.config_json.contains("\"prompt_tuning_init\": \"SAMPLE_VOCAB\""));
}

#[test]
fn rslora_and_rank_patterns_shape_the_adapter() {
    let m = model("llama");
    let mut config = LoraConfig {
        target_modules: vec!["q_proj".into(), "v_proj".into()],
        use_rslora: true,
        r: 16,
        ..LoraConfig::default()
    };
    config.rank_pattern.insert("v_proj".into(), 4);
    let adapter = block(LoraAdapter::init(&m.lm, config, 0)).unwrap();
    for module in &adapter.modules {
        let r = if module.path.ends_with("v_proj") { 4 } else { 16 };
        assert_eq!(module.rank(), r, "{}", module.path);
        assert!((module.scale - 16.0 / (r as f64).sqrt()).abs() < 1e-12);
    }
    let saved = block(export(&Adapter::Lora(adapter), "base", false, &ModelCard::default())).unwrap();
    let config: serde_json::Value = serde_json::from_str(&saved.config_json).unwrap();
    assert_eq!(config["rank_pattern"]["v_proj"], 4);
    let reloaded = block(import(&saved.config_json, &saved.weights, &m.lm)).unwrap();
    assert_eq!(reloaded.params().len(), 8);
}

#[test]
fn bad_adapter_files_are_named() {
    let m = model("llama");
    let dir = fixtures().join("llama/lora/final");
    let config = std::fs::read_to_string(dir.join(files::CONFIG_FILE)).unwrap();
    let weights = std::fs::read(dir.join(files::WEIGHTS_FILE)).unwrap();
    let expect = |config: &str, weights: &[u8], needle: &str| {
        let e = block(import(config, weights, &m.lm)).err().expect("import should fail");
        assert_eq!(e.code, ErrorCode::InvalidAdapter, "{e}");
        assert!(e.message.contains(needle), "{needle:?} not in: {e}");
    };
    // A DoRA config over plain LoRA weights lacks the magnitude vectors.
    expect(&config.replace("\"use_dora\": false", "\"use_dora\": true"), &weights, "lora_magnitude_vector");
    expect(&config.replace("\"r\": 8", "\"r\": 4"), &weights, "expected [4, 64]");
    expect(&config.replace("\"o_proj\"", "\"up_proj\""), &weights, "up_proj.lora_A.weight");
    // An IA3 config over LoRA weights: PEFT's default feed-forward module is not among the targets.
    expect(&config.replace("\"LORA\"", "\"IA3\""), &weights, "IA3 feedforward_modules");
    expect(&config, &weights[..weights.len() - 10], "adapter_model.safetensors");
    // The GPT-2 adapter does not fit a Llama model.
    let gpt2 = fixtures().join("gpt2/lora/final");
    expect(
        &std::fs::read_to_string(gpt2.join(files::CONFIG_FILE)).unwrap(),
        &std::fs::read(gpt2.join(files::WEIGHTS_FILE)).unwrap(),
        "match no layer",
    );
}

#[test]
fn evaluation_uses_the_base_model_without_an_adapter() {
    let m = model("gpt2");
    let eval = examples(&m, "eval.jsonl");
    let loss = block(evaluate(&m.lm, &Adapter::none(&m.lm), &eval, 16, m.pad_id())).unwrap();
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("gpt2/lora/losses.json")).unwrap()).unwrap();
    assert!((loss - reference["eval_loss_initial"].as_f64().unwrap()).abs() < 1e-4);
}

#[test]
fn randomized_pissa_reimports_with_the_residual_it_was_trained_against() {
    let m = model("qwen2");
    let adapter = {
        let config = LoraConfig {
            target_modules: vec!["q_proj".into(), "o_proj".into()],
            init: LoraInit::Pissa { niter: Some(2) },
            ..LoraConfig::default()
        };
        Adapter::Lora(block(LoraAdapter::init(&m.lm, config, 11)).unwrap())
    };
    let (trainer, _) = train(&m, adapter, config(3));
    let trained = logits(&m, trainer.adapter());
    let saved = block(export(trainer.adapter(), "base", false, &ModelCard::default())).unwrap();
    let reloaded = block(import(&saved.config_json, &saved.weights, &m.lm)).unwrap();
    let err = max_abs_diff(&logits(&m, &reloaded), &trained);
    assert!(
        err < 1e-6,
        "the re-imported pissa_niter_2 adapter differs by {err}: its residual was rebuilt with another seed"
    );
}

/// A Gaussian-init LoRA trainer on `train` rows and the fixture eval rows.
fn q_proj_trainer(m: &Model, train: Vec<Example>, config: TrainConfig) -> Trainer {
    let adapter = lora(m, &["q_proj"], LoraInit::Gaussian);
    Trainer::new(m.lm.clone(), adapter, train, examples(m, "eval.jsonl"), config, m.pad_id()).unwrap()
}

#[test]
fn a_checkpoint_names_what_differs_from_the_run_it_should_resume() {
    let m = model("llama");
    let rows = examples(&m, "train.jsonl");
    let mut first = q_proj_trainer(&m, rows.clone(), config(4));
    block(first.step()).unwrap();
    let checkpoint = block(first.checkpoint()).unwrap();
    let fresh = |train: Vec<Example>, config: TrainConfig| q_proj_trainer(&m, train, config);
    assert!(fresh(rows.clone(), config(4)).restore(&checkpoint).is_ok());

    // Other data with the same number of rows: one row's completion edited.
    let mut edited = rows.clone();
    let last = edited[5].labels.len() - 1;
    edited[5].labels[last] = (edited[5].labels[last] + 1) % 500;
    edited[5].input_ids[last] = edited[5].labels[last] as u32;
    let e = fresh(edited, config(4)).restore(&checkpoint).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidOptions);
    assert!(e.message.contains("training examples differ") && !e.message.contains("option "), "{e}");

    let e = fresh(rows.clone(), TrainConfig { lr: 2e-2, ..config(4) }).restore(&checkpoint).unwrap_err();
    assert!(e.message.contains("option lr differs (was 0.01; now 0.02)") && !e.message.contains("examples"), "{e}");

    // Settings recorded by a newer version (or an older one) are not compared.
    let mut newer = fresh(rows, config(4));
    newer.identify("someFutureOption", "on");
    assert!(newer.restore(&checkpoint).is_ok());
}
