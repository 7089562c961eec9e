//! Training parity with Hugging Face PEFT (LoRA, DoRA, IA3, prompt tuning) and AdapterHub
//! (bottleneck adapters) + torch AdamW: starting from the fixture's initial adapter and batches,
//! the per-step losses, the step-0/1 gradients, the final adapter, the final logits and the eval
//! losses all match the reference within 1e-4, and the trainable-parameter count is the fixture's.

mod common;

use std::path::Path;

use common::*;
use webtune::data::{Batch, Example, IGNORE_INDEX};
use webtune::model::files::Folder;
use webtune::model::{LoadOptions, Model};
use webtune::peft::files::{self, import};
use webtune::peft::{Adapter, PromptAdapter, PromptConfig, PromptInit, adapterhub, read_adapter};
use webtune::train::{AdamWConfig, Schedule, TrainConfig, Trainer, evaluate, loss_sum};

const TOLERANCE: f32 = 1e-4;

/// The 64 train rows (in file order) and 16 eval rows, recovered from the fixture's batches.
fn fixture_examples() -> (Vec<Example>, Vec<Example>, Vec<Batch>) {
    let batches = read_reference(&fixtures().join("batches.safetensors"));
    let batch = |name: &str| {
        let ids = &batches[&format!("{name}.input_ids")];
        let (b, len) = (ids.shape[0], ids.shape[1]);
        Batch {
            input_ids: ids.ids(),
            attention_mask: batches[&format!("{name}.attention_mask")].values.iter().map(|&v| v as u8).collect(),
            labels: batches[&format!("{name}.labels")].values.iter().map(|&v| v as i64).collect(),
            batch: b,
            len,
        }
    };
    let rows = |b: &Batch| -> Vec<Example> {
        (0..b.batch)
            .map(|r| {
                let real = b.attention_mask[r * b.len..(r + 1) * b.len].iter().filter(|&&m| m == 1).count();
                Example {
                    input_ids: b.input_ids[r * b.len..r * b.len + real].to_vec(),
                    labels: b.labels[r * b.len..r * b.len + real].to_vec(),
                    line: 0,
                }
            })
            .collect()
    };
    let steps: Vec<Batch> = (0..20).map(|s| batch(&format!("step{s}"))).collect();
    let train: Vec<Example> = steps[..16].iter().flat_map(rows).collect();
    let eval_batch = batch("eval");
    (train, rows(&eval_batch), steps)
}

fn load_adapter(dir: &Path, model: &Model) -> Adapter {
    let config = std::fs::read_to_string(dir.join(files::CONFIG_FILE)).unwrap();
    let weights = std::fs::read(dir.join(files::WEIGHTS_FILE)).unwrap();
    block(import(&config, &weights, &model.lm)).unwrap()
}

/// The trainer's gradients for its next step, keyed like PEFT.
fn gradients(trainer: &Trainer) -> Vec<(String, Vec<f32>)> {
    let keys = trainer.adapter().params().into_iter().map(|(key, _)| key);
    let grads = trainer.next_gradients().unwrap().grads.per_tensor(trainer.adapter());
    keys.zip(grads).map(|(key, g)| (key, floats(g))).collect()
}

fn compare(what: &str, got: &[f32], expected: &[f32], worst: &mut f32) {
    let err = max_abs_diff(got, expected);
    *worst = worst_of([*worst, err]);
    assert!(err < TOLERANCE, "{what}: differs from PEFT by {err}");
}

/// PEFT's runs: `<model>/<method>`.
fn parity(model_name: &str, method: &str) {
    run_parity(model_name, &fixtures().join(model_name).join(method), &LoadOptions::default(), false);
}

/// PEFT's runs on a model loaded with `options`.
fn parity_with(model_name: &str, method: &str, options: &LoadOptions) {
    run_parity(model_name, &fixtures().join(model_name).join(method), options, false);
}

/// PEFT's runs, trained with every decoder layer recomputed in the backward pass.
fn parity_recomputed(model_name: &str, method: &str) {
    run_parity(model_name, &fixtures().join(model_name).join(method), &LoadOptions::default(), true);
}

/// AdapterHub's runs: `adapterhub/<model>/<run>`.
fn adapterhub_parity(model_name: &str, run: &str, recompute_layers: bool) {
    let case = fixtures().join("adapterhub").join(model_name).join(run);
    run_parity(model_name, &case, &LoadOptions::default(), recompute_layers);
}

fn run_parity(model_name: &str, case: &Path, options: &LoadOptions, recompute_layers: bool) {
    let device = gpu();
    let folder = Folder::new(fixtures().join(model_name).join("base")).unwrap();
    let model = Model::load_with(&folder, &device, options).unwrap();
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(case.join("losses.json")).unwrap()).unwrap();
    let initial = block(read_adapter(&Folder::new(case.join("initial")).unwrap(), &model.lm)).unwrap();
    let trainable = initial.trainable_parameters();
    if let Some(expected) = reference["n_trainable_params"].as_u64() {
        assert_eq!(trainable as u64, expected, "trainable parameters");
    }
    let (train, eval, _) = fixture_examples();
    let logits_ref = read_reference(&case.join("expected_logits.safetensors"));
    let grads_ref = read_reference(&case.join("grads.safetensors"));
    let (mut loss_err, mut grad_err, mut adapter_err, mut logit_err) = (0f32, 0f32, 0f32, 0f32);
    let mut grad_rel = 0f64;

    let logits_of = |adapter: &Adapter, i: usize| {
        let ids = logits_ref[&format!("input_ids_{i}")].ids();
        floats(model.lm.logits(adapter.hidden(&model.lm, &ids, 1, None, None).unwrap()))
    };
    for i in 0..2 {
        compare(
            "initial logits",
            &logits_of(&initial, i),
            &logits_ref[&format!("initial_logits_{i}")].f32s(),
            &mut logit_err,
        );
    }
    let eval_before = block(evaluate(&model.lm, &initial, &eval, 16, 1)).unwrap();
    assert!((eval_before - reference["eval_loss_initial"].as_f64().unwrap()).abs() < TOLERANCE as f64);

    let config = TrainConfig {
        lr: 1e-3,
        optimizer: AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 },
        schedule: Schedule::Constant,
        warmup_steps: 0,
        batch_size: 4,
        grad_accum: 1,
        clip: None,
        max_steps: Some(20),
        epochs: 1,
        eval_every: None,
        early_stopping: None,
        shuffle: false,
        seed: 0,
        recompute_layers,
    };
    let mut trainer = Trainer::new(model.lm.clone(), initial.clone(), train, eval.clone(), config, 1).unwrap();
    let expected_losses = reference["train_loss"].as_array().unwrap();
    for (s, expected) in expected_losses.iter().enumerate() {
        if s < 2 {
            for (key, g) in gradients(&trainer) {
                let e = assert_gradient_close(
                    &format!("step-{s} gradient of {key}"),
                    &g,
                    &grads_ref[&format!("step{s}.{key}")].f32s(),
                );
                grad_err = worst_of([grad_err, e.max_abs]);
                grad_rel = grad_rel.max(e.rel_norm);
            }
        }
        let metrics = block(trainer.step()).unwrap();
        compare(
            &format!("loss of step {s}"),
            &[metrics.loss as f32],
            &[expected.as_f64().unwrap() as f32],
            &mut loss_err,
        );
    }
    assert!(trainer.is_done());

    let final_dir = case.join("final");
    let final_file = [files::WEIGHTS_FILE, adapterhub::WEIGHTS_FILE].map(|f| final_dir.join(f));
    let final_ref = read_reference(final_file.iter().find(|f| f.exists()).expect("a final adapter"));
    for (key, t) in trainer.adapter().params() {
        compare(&format!("final {key}"), &floats(t), &final_ref[&key].f32s(), &mut adapter_err);
    }
    for i in 0..2 {
        compare(
            "final logits",
            &logits_of(trainer.adapter(), i),
            &logits_ref[&format!("logits_{i}")].f32s(),
            &mut logit_err,
        );
    }
    let eval_after = block(trainer.evaluate()).unwrap();
    assert!((eval_after - reference["eval_loss_final"].as_f64().unwrap()).abs() < TOLERANCE as f64);
    println!(
        "{}{}: max |Δ| loss {loss_err:.2e}, gradients {grad_err:.2e} (relative norm {grad_rel:.2e}), final adapter {adapter_err:.2e}, logits {logit_err:.2e}; eval {eval_before:.6} -> {eval_after:.6}; {trainable} trainable (fixture {})",
        case.strip_prefix(fixtures()).unwrap().display(),
        if recompute_layers { " (layers recomputed)" } else { "" },
        reference["n_trainable_params"]
    );
}

#[test]
fn llama_lora() {
    parity("llama", "lora");
}

#[test]
fn llama_prompt_tuning_random() {
    parity("llama", "prompt_tuning_random");
}

#[test]
fn llama_prompt_tuning_text() {
    parity("llama", "prompt_tuning_text");
}

#[test]
fn qwen2_lora() {
    parity("qwen2", "lora");
}

#[test]
fn qwen2_prompt_tuning_random() {
    parity("qwen2", "prompt_tuning_random");
}

#[test]
fn qwen2_prompt_tuning_text() {
    parity("qwen2", "prompt_tuning_text");
}

#[test]
fn gpt2_lora() {
    parity("gpt2", "lora");
}

#[test]
fn gpt2_prompt_tuning_random() {
    parity("gpt2", "prompt_tuning_random");
}

#[test]
fn gpt2_prompt_tuning_text() {
    parity("gpt2", "prompt_tuning_text");
}

#[test]
fn llama_dora() {
    parity("llama", "dora");
}

#[test]
fn qwen2_dora() {
    parity("qwen2", "dora");
}

#[test]
fn llama_ia3() {
    parity("llama", "ia3");
}

#[test]
fn qwen2_ia3() {
    parity("qwen2", "ia3");
}

#[test]
fn gpt2_ia3() {
    parity("gpt2", "ia3");
}

#[test]
fn adapterhub_llama_seq_bn() {
    adapterhub_parity("llama", "seq_bn", false);
}

#[test]
fn adapterhub_llama_double_seq_bn() {
    adapterhub_parity("llama", "double_seq_bn", false);
}

#[test]
fn adapterhub_gpt2_seq_bn() {
    adapterhub_parity("gpt2", "seq_bn", false);
}

#[test]
fn adapterhub_gpt2_double_seq_bn() {
    adapterhub_parity("gpt2", "double_seq_bn", false);
}

/// Split tables (the binding limit lowered to 50,000 bytes: the 512 × 64 embedding and tied head
/// in 3 row blocks, every loss computed in chunks of at most 12,500 logits) train as the unsplit
/// model does: LoRA on the layers, prompt tuning through the embedding.
#[test]
fn llama_lora_with_split_tables() {
    parity_with("llama", "lora", &LoadOptions { max_binding_bytes: Some(50_000), ..LoadOptions::default() });
}

#[test]
fn gemma3_prompt_tuning_random_with_split_tables() {
    let options = LoadOptions { max_binding_bytes: Some(50_000), ..LoadOptions::default() };
    parity_with("gemma3", "prompt_tuning_random", &options);
}

/// TEXT init takes the embedding rows of the tokenised init text, truncated to 8, as PEFT does.
#[test]
fn text_init_matches_peft() {
    let device = gpu();
    for name in MODELS {
        let model = Model::load(&Folder::new(fixtures().join(name).join("base")).unwrap(), &device).unwrap();
        let config =
            PromptConfig { num_virtual_tokens: 8, init: PromptInit::Text("Reverse the letters of the word:".into()) };
        let ours = PromptAdapter::init(&model.lm, &model.tokenizer, config, 0).unwrap();
        let reference = load_adapter(&fixtures().join(name).join("prompt_tuning_text/initial"), &model);
        let Adapter::Prompt(reference) = reference else { panic!("prompt adapter expected") };
        assert_eq!(floats(ours.embeddings), floats(reference.embeddings), "{name}");
    }
}

/// Labels of -100 never reach the loss; only supervised tokens count.
#[test]
fn loss_ignores_unsupervised_positions() {
    let device = gpu();
    let model = Model::load(&Folder::new(fixtures().join("llama/base")).unwrap(), &device).unwrap();
    let adapter = load_adapter(&fixtures().join("llama/lora/initial"), &model);
    let (_, _, steps) = fixture_examples();
    let mut batch = steps[0].clone();
    let (_, count) = loss_sum(&model.lm, &adapter, &batch).unwrap().unwrap();
    batch.labels.iter_mut().for_each(|l| *l = IGNORE_INDEX);
    assert!(loss_sum(&model.lm, &adapter, &batch).unwrap().is_none());
    assert!(count > 0);
}

#[test]
fn qwen3_lora() {
    parity("qwen3", "lora");
}

#[test]
fn qwen3_prompt_tuning_random() {
    parity("qwen3", "prompt_tuning_random");
}

#[test]
fn gemma3_lora() {
    parity("gemma3", "lora");
}

/// The virtual tokens go in unscaled while the real tokens pass Gemma's sqrt(hidden) scale.
#[test]
fn gemma3_prompt_tuning_random() {
    parity("gemma3", "prompt_tuning_random");
}

// The same runs with each decoder layer recomputed in the backward pass (train::recompute): one
// per architecture and per kind of adapter hook (linear layers, residual adds, the soft prompt
// through GPT-2's learned positions, Gemma 3's sliding layers, Qwen3's q/k norms).
#[test]
fn llama_lora_recomputed() {
    parity_recomputed("llama", "lora");
}

#[test]
fn qwen3_lora_recomputed() {
    parity_recomputed("qwen3", "lora");
}

#[test]
fn gemma3_lora_recomputed() {
    parity_recomputed("gemma3", "lora");
}

#[test]
fn gpt2_prompt_tuning_text_recomputed() {
    parity_recomputed("gpt2", "prompt_tuning_text");
}

#[test]
fn qwen2_dora_recomputed() {
    parity_recomputed("qwen2", "dora");
}

#[test]
fn gpt2_ia3_recomputed() {
    parity_recomputed("gpt2", "ia3");
}

#[test]
fn adapterhub_llama_double_seq_bn_recomputed() {
    adapterhub_parity("llama", "double_seq_bn", true);
}
