//! The `webtune` command line, run as a user runs it, on the fixture models.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

fn webtune(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_webtune")).args(args).output().expect("webtune runs")
}

fn ok(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "webtune failed: {stderr}");
    String::from_utf8_lossy(&output.stdout).into_owned() + &stderr
}

fn failed(output: &Output) -> String {
    assert!(!output.status.success(), "webtune should have failed");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn data(file: &str) -> String {
    fixtures().join("data").join(file).display().to_string()
}

fn model(name: &str) -> String {
    fixtures().join(name).join("base").display().to_string()
}

#[test]
fn train_writes_a_peft_adapter_and_metrics() {
    let out = scratch("cli-train");
    let log = ok(&webtune(&[
        "train",
        "--model",
        &model("llama"),
        "--data",
        &data("train.jsonl"),
        "--eval-data",
        &data("eval.jsonl"),
        "--out",
        path(&out),
        "--method",
        "lora",
        "--r",
        "4",
        "--alpha",
        "8",
        "--targets",
        "q_proj,v_proj",
        "--steps",
        "6",
        "--eval-every",
        "3",
        "--lr",
        "1e-3",
        "--schedule",
        "cosine",
        "--warmup-steps",
        "1",
        "--batch-size",
        "4",
        "--grad-accum",
        "2",
        "--seed",
        "3",
    ]));
    assert!(log.contains("step 6/6") && log.contains("tok/s") && log.contains("ETA"), "{log}");
    let metrics: Vec<serde_json::Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(metrics.len(), 6);
    for (i, m) in metrics.iter().enumerate() {
        for key in ["step", "loss", "lr", "grad_norm", "tokens"] {
            assert!(m.get(key).is_some(), "metrics line {i} lacks {key}");
        }
        assert_eq!(m["step"], i + 1);
        assert_eq!(m.get("eval_loss").is_some(), (i + 1) % 3 == 0);
    }
    assert_eq!(metrics[0]["lr"], 0.0);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(config["r"], 4);
    assert_eq!(config["peft_type"], "LORA");
    assert!(out.join("adapter_model.safetensors").is_file() && out.join("README.md").is_file());

    // The adapter evaluates through `webtune eval`, and lowers the loss of the base model.
    let tuned =
        ok(&webtune(&["eval", "--model", &model("llama"), "--adapter", path(&out), "--data", &data("eval.jsonl")]));
    let base = ok(&webtune(&["eval", "--model", &model("llama"), "--data", &data("eval.jsonl")]));
    let loss = |text: &str| -> f64 {
        text.split("eval loss ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap()
    };
    assert!((loss(&base) - 6.213176).abs() < 1e-4, "{base}");
    assert!(loss(&tuned) < loss(&base), "{tuned} vs {base}");
    assert!(tuned.contains("perplexity"));
}

#[test]
fn prompt_tuning_and_pissa_from_the_command_line() {
    let out = scratch("cli-prompt");
    ok(&webtune(&[
        "train",
        "--model",
        &model("gpt2"),
        "--data",
        &data("train.jsonl"),
        "--out",
        path(&out),
        "--method",
        "prompt-tuning",
        "--init-text",
        "Reverse the letters",
        "--virtual-tokens",
        "6",
        "--steps",
        "2",
    ]));
    let config = std::fs::read_to_string(out.join("adapter_config.json")).unwrap();
    assert!(
        config.contains("\"prompt_tuning_init\": \"TEXT\"") && config.contains("\"num_virtual_tokens\": 6"),
        "{config}"
    );

    let out = scratch("cli-pissa");
    ok(&webtune(&[
        "train",
        "--model",
        &model("qwen2"),
        "--data",
        &data("train.jsonl"),
        "--out",
        path(&out),
        "--init",
        "pissa",
        "--targets",
        "q_proj,o_proj",
        "--steps",
        "2",
        "--export-pissa-as-lora",
        "--no-shuffle",
    ]));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(config["r"], 16);
    assert_eq!(config["lora_alpha"], 32);
    assert_eq!(config["init_lora_weights"], true);
}

#[test]
fn logits_prints_top_tokens_and_writes_all_logits() {
    let out = scratch("cli-logits").join("logits.safetensors");
    let text = ok(&webtune(&["logits", "--model", &model("qwen2"), "--text", "Reverse: rhwf ->", "--out", path(&out)]));
    assert_eq!(text.lines().filter(|l| l.contains("logit") && l.contains(" p ")).count(), 5, "{text}");
    let written = read_reference(&out);
    assert_eq!(written["logits"].shape, vec![7, 512]);
}

#[test]
fn a_bad_dataset_row_is_named_and_can_be_skipped() {
    let dir = scratch("cli-bad-rows");
    let mut rows = std::fs::read_to_string(fixtures().join("data/train.jsonl")).unwrap();
    rows = rows.replacen("{\"prompt\": \"Reverse: dyl ->\"", "{\"prompt\": \"Reverse: dyl ->\" oops", 1);
    let file = dir.join("train.jsonl");
    std::fs::write(&file, rows).unwrap();
    let out = dir.join("out");
    let args = ["train", "--model", &model("llama"), "--data", path(&file), "--out", path(&out), "--steps", "1"];
    let error = failed(&webtune(&args));
    assert!(error.contains("train.jsonl:2:"), "{error}");
    let log = ok(&webtune(&[&args[..], &["--skip-bad-rows"]].concat()));
    assert!(log.contains("skipped 1 bad rows") && log.contains("line 2:"), "{log}");
}

#[test]
fn a_failed_export_keeps_the_previous_adapter() {
    let out = scratch("cli-atomic");
    let args =
        ["train", "--model", &model("llama"), "--data", &data("train.jsonl"), "--out", path(&out), "--steps", "1"];
    ok(&webtune(&args));
    let good_config = std::fs::read(out.join("adapter_config.json")).unwrap();
    let good_weights = std::fs::read(out.join("adapter_model.safetensors")).unwrap();
    // Make the weights file impossible to replace: the export must fail without touching the rest.
    std::fs::remove_file(out.join("README.md")).unwrap();
    std::fs::create_dir(out.join("README.md")).unwrap();
    std::fs::write(out.join("README.md").join("keep"), "x").unwrap();
    let error = failed(&webtune(&[&args[..], &["--r", "4"]].concat()));
    assert!(error.contains("README.md"), "{error}");
    let left: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(left.iter().all(|n| !n.contains(".tmp-")), "temporary files left behind: {left:?}");
    // The weights and config were renamed before README.md failed, so they are the new pair; the
    // user's old adapter is never half-replaced: either both new or both old.
    let config = std::fs::read(out.join("adapter_config.json")).unwrap();
    let weights = std::fs::read(out.join("adapter_model.safetensors")).unwrap();
    assert_eq!(config == good_config, weights == good_weights, "config and weights must belong together");
}

#[test]
fn bench_prints_one_json_line() {
    let text = ok(&webtune(&[
        "bench",
        "--layers",
        "1",
        "--steps",
        "1",
        "--batch-size",
        "1",
        "--seq-len",
        "16",
        "--matmul-size",
        "128",
    ]));
    let line = text.lines().find(|l| l.starts_with('{')).expect("a JSON line");
    let bench: serde_json::Value = serde_json::from_str(line).unwrap();
    for key in ["ms_per_step", "tokens_per_s", "peak_gpu_reserved_mb", "matmul_gflops", "mfu_vs_matmul"] {
        assert!(bench[key].is_number(), "{key} missing in {line}");
    }
}

#[test]
fn missing_model_folder_fails_fast_with_its_name() {
    let error = failed(&webtune(&["logits", "--model", "/no/such/model", "--text", "hi"]));
    assert!(error.contains("/no/such/model"), "{error}");
}
