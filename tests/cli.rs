//! The `webtune` command line, run as a user runs it, on the fixture models.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

fn webtune<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_webtune")).args(args).output().expect("webtune runs")
}

/// `webtune train` of a fixture model on `data/train.jsonl` into `out`, with `extra` flags.
fn train_args(model_name: &str, out: &Path, extra: &[&str]) -> Vec<String> {
    let fixed = ["train", "--model", &model(model_name), "--data", &data("train.jsonl"), "--out", path(out)];
    fixed.iter().chain(extra).map(|s| s.to_string()).collect()
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
    let eval = data("eval.jsonl");
    let flags = [
        "--eval-data",
        &eval,
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
    ];
    let log = ok(&webtune(&train_args("llama", &out, &flags)));
    assert!(log.contains("step 6/6") && log.contains("tok/s") && log.contains("ETA"), "{log}");
    let metrics: Vec<serde_json::Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(metrics.len(), 6);
    for (i, m) in metrics.iter().enumerate() {
        // The same names as the JS API's StepMetrics.
        for key in ["step", "totalSteps", "epoch", "loss", "lr", "gradNorm", "tokens", "supervisedTokens"] {
            assert!(m.get(key).is_some(), "metrics line {i} lacks {key}: {m}");
        }
        assert_eq!(m["step"], i + 1);
        assert_eq!(m["totalSteps"], 6);
        assert_eq!(m.get("evalLoss").is_some(), (i + 1) % 3 == 0);
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
    ok(&webtune(&train_args(
        "gpt2",
        &out,
        &["--method", "prompt-tuning", "--init-text", "Reverse the letters", "--virtual-tokens", "6", "--steps", "2"],
    )));
    let config = std::fs::read_to_string(out.join("adapter_config.json")).unwrap();
    assert!(
        config.contains("\"prompt_tuning_init\": \"TEXT\"") && config.contains("\"num_virtual_tokens\": 6"),
        "{config}"
    );

    let out = scratch("cli-pissa");
    ok(&webtune(&train_args(
        "qwen2",
        &out,
        &[
            "--init",
            "pissa",
            "--targets",
            "q_proj,o_proj",
            "--steps",
            "2",
            "--export-pissa-as-lora",
            "--shuffle",
            "false",
        ],
    )));
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
    let args = train_args("llama", &out, &["--steps", "1"]);
    ok(&webtune(&args));
    let good_config = std::fs::read(out.join("adapter_config.json")).unwrap();
    let good_weights = std::fs::read(out.join("adapter_model.safetensors")).unwrap();
    // Make README.md, the last file written, impossible to replace: the export must fail and leave
    // the previous adapter whole.
    std::fs::remove_file(out.join("README.md")).unwrap();
    std::fs::create_dir(out.join("README.md")).unwrap();
    std::fs::write(out.join("README.md").join("keep"), "x").unwrap();
    let error = failed(&webtune(&[&args[..], &["--r".to_owned(), "4".to_owned()]].concat()));
    assert!(error.contains("README.md"), "{error}");
    let left: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(left.iter().all(|n| !n.starts_with('.')), "temporary or backup files left behind: {left:?}");
    // README.md comes after the weights and the config, which were already replaced when it failed:
    // they must be the old ones again, not a mix of the new adapter and the old folder.
    assert!(out.join("README.md").join("keep").is_file());
    assert!(std::fs::read(out.join("adapter_config.json")).unwrap() == good_config, "the config was replaced");
    assert!(std::fs::read(out.join("adapter_model.safetensors")).unwrap() == good_weights, "the weights were replaced");
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

/// The `--flag` entries of a clap help text, each with its `[default: …]` if it shows one.
fn flags_with_defaults(help: &str) -> std::collections::BTreeMap<String, Option<String>> {
    let mut flags = std::collections::BTreeMap::new();
    let mut current: Option<String> = None;
    for line in help.lines() {
        let trimmed = line.trim_start();
        let flag = trimmed.strip_prefix("-h, ").unwrap_or(trimmed);
        if let Some(rest) = flag.strip_prefix("--") {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '-').collect();
            flags.insert(name.clone(), None);
            current = Some(name);
        }
        if let (Some(name), Some(start)) = (&current, line.find("[default: ")) {
            let value = &line[start + "[default: ".len()..];
            flags.insert(name.clone(), Some(value[..value.find(']').unwrap()].to_owned()));
        }
    }
    flags
}

#[test]
fn train_help_lists_the_options_of_index_d_ts_with_their_defaults() {
    let help = ok(&webtune(&["train", "--help"]));
    let mut flags = flags_with_defaults(&help);
    for cli_only in [
        "model",
        "data",
        "eval-data",
        "out",
        "init-adapter",
        "export-pissa-as-lora",
        "gguf",
        "merge-into",
        "checkpoint-every",
        "resume",
        "help",
    ] {
        assert!(flags.remove(cli_only).is_some(), "--{cli_only} missing from:\n{help}");
    }
    let kebab = |key: &str| {
        key.chars()
            .flat_map(|c| if c.is_uppercase() { vec!['-', c.to_ascii_lowercase()] } else { vec![c] })
            .collect::<String>()
    };
    let declared = common::dts::interface(&common::dts::index_d_ts(), "TrainingConfig");
    let names: std::collections::BTreeSet<String> = declared.keys().map(|k| kebab(k)).collect();
    assert_eq!(flags.keys().cloned().collect::<std::collections::BTreeSet<_>>(), names, "flags vs TrainingConfig keys");
    let defaults = serde_json::to_value(webtune::options::DEFAULTS).unwrap();
    for (key, field) in &declared {
        if defaults[key].is_null() {
            continue; // computed (lr, targets) or absent (steps): the help text says what happens
        }
        let shown = &flags[&kebab(key)];
        let documented = common::dts::documented_default(&field.doc).filter(|d| d != &serde_json::json!({}));
        let shown_value =
            shown.as_ref().map(|s| serde_json::from_str(s).unwrap_or(serde_json::Value::String(s.clone())));
        match (documented, shown_value) {
            (Some(d), Some(s)) => {
                assert!(common::dts::same_value(&d, &s), "--{}: index.d.ts says {d}, --help {s}", kebab(key))
            }
            (None, None) => {}
            (d, s) => panic!("--{}: index.d.ts default {d:?}, --help default {s:?}", kebab(key)),
        }
    }
}

#[test]
fn rank_and_alpha_patterns_from_the_command_line() {
    let out = scratch("cli-patterns");
    ok(&webtune(&train_args(
        "llama",
        &out,
        &[
            "--targets",
            "q_proj,v_proj",
            "--rank-pattern",
            "q_proj=2,v_proj=6",
            "--alpha-pattern",
            "v_proj=3",
            "--rslora",
            "--steps",
            "1",
        ],
    )));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(config["rank_pattern"], serde_json::json!({"q_proj": 2, "v_proj": 6}));
    assert_eq!(config["alpha_pattern"], serde_json::json!({"v_proj": 3}));
    assert_eq!(config["use_rslora"], true);
    let weights = read_reference(&out.join("adapter_model.safetensors"));
    assert_eq!(weights["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"].shape, [2, 64]);
    assert_eq!(weights["base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight"].shape[1], 6);

    let error = failed(&webtune(&train_args("llama", &out, &["--rank-pattern", "q_proj:2"])));
    assert!(error.contains("q_proj:2") && error.contains("name=value"), "{error}");
}

/// The step a checkpoint file was taken after.
fn checkpoint_step(path: &Path) -> Option<u64> {
    let bytes = std::fs::read(path).ok()?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).ok()?;
    let state: serde_json::Value = serde_json::from_str(header.metadata().as_ref()?.get("webtune")?).ok()?;
    state["step"].as_u64()
}

fn metrics_lines(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn a_run_killed_between_checkpoints_resumes_to_the_same_adapter_and_metrics() {
    let eval = data("eval.jsonl");
    let flags = [
        "--eval-data",
        &eval,
        "--steps",
        "8",
        "--checkpoint-every",
        "3",
        "--eval-every",
        "2",
        "--dropout",
        "0.1",
        "--batch-size",
        "2",
        "--lr",
        "1e-3",
        "--seed",
        "5",
    ];
    let run = |out: &Path| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_webtune"));
        command.args(train_args("llama", out, &flags));
        command
    };
    let straight = scratch("cli-resume-straight");
    ok(&run(&straight).output().unwrap());

    // Kill a run once it has logged steps after its last checkpoint (retry when the kill lands
    // exactly on a checkpoint, which would leave nothing to log twice).
    let resumed = scratch("cli-resume-killed");
    let mut killed_between = false;
    for _ in 0..10 {
        let _ = std::fs::remove_dir_all(&resumed);
        let mut child =
            run(&resumed).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
        while metrics_lines(&resumed).len() < 4 && child.try_wait().unwrap().is_none() {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let logged = metrics_lines(&resumed).len() as u64;
        if checkpoint_step(&resumed.join("checkpoint.safetensors")).is_some_and(|step| step < logged && logged < 8) {
            killed_between = true;
            break;
        }
    }
    assert!(killed_between, "could not stop a run between two checkpoints");
    let log = ok(&run(&resumed).arg("--resume").output().unwrap());
    assert!(log.contains("resumed from"), "{log}");

    let (expected, got) = (metrics_lines(&straight), metrics_lines(&resumed));
    assert_eq!(got.len(), 8, "one metrics line per step, none twice: {got:?}");
    for (e, g) in expected.iter().zip(&got) {
        assert_eq!(keys_of(e), keys_of(g), "{e} vs {g}");
        for (key, value) in e.as_object().unwrap() {
            let (a, b) = (value.as_f64().unwrap(), g[key].as_f64().unwrap());
            assert!((a - b).abs() <= 1e-6 * a.abs().max(1.0), "step {}: {key} {a} vs {b}", e["step"]);
        }
    }
    let (a, b) = (
        read_reference(&straight.join("adapter_model.safetensors")),
        read_reference(&resumed.join("adapter_model.safetensors")),
    );
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (key, tensor) in &a {
        let diff = max_abs_diff(&tensor.f32s(), &b[key].f32s());
        assert!(diff < 1e-6, "{key} differs by {diff}");
    }
}

fn keys_of(value: &serde_json::Value) -> Vec<&String> {
    value.as_object().unwrap().keys().collect()
}

/// The tensor names and dtype of a safetensors file's header.
fn safetensors_header(path: &Path) -> serde_json::Map<String, serde_json::Value> {
    let bytes = std::fs::read(path).unwrap();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
    header.remove("__metadata__");
    header
}

fn eval_loss(model_dir: &str, adapter: Option<&Path>) -> f64 {
    let mut args = vec!["eval", "--model", model_dir, "--data"];
    let data = data("eval.jsonl");
    args.push(&data);
    if let Some(dir) = adapter {
        args.extend(["--adapter", path(dir)]);
    }
    let text = ok(&webtune(&args));
    text.split("eval loss ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn bottleneck_adapters_are_written_and_read_as_adapterhub_folders() {
    let out = scratch("cli-seq-bn");
    let flags = [
        "--method",
        "seq-bn",
        "--reduction-factor",
        "4",
        "--non-linearity",
        "gelu",
        "--adapter-name",
        "mine",
        "--init",
        "mam_adapter",
        "--steps",
        "2",
        "--lr",
        "1e-2",
    ];
    let log = ok(&webtune(&train_args("llama", &out, &flags)));
    assert!(log.contains("trainable parameters in 2 layers"), "{log}");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!((config["name"].as_str(), config["version"].as_str()), (Some("mine"), Some("adapters.1.3.0")));
    assert_eq!(config["config"]["non_linearity"], "gelu");
    assert_eq!(config["config"]["init_weights"], "mam_adapter");
    assert_eq!(config["config"]["reduction_factor"].as_f64(), Some(4.0));
    assert!(!out.join("adapter_model.safetensors").exists(), "a bottleneck adapter is not written as PEFT files");
    let keys: Vec<String> = safetensors_header(&out.join("adapter.safetensors")).keys().cloned().collect();
    assert!(
        keys.contains(&"model.layers.0.output_adapters.adapters.mine.adapter_down.0.weight".to_owned()),
        "{keys:?}"
    );
    assert_eq!(keys.len(), 2 * 4, "two layers, each down and up with biases: {keys:?}");

    // Round trip: evaluate it, and train on from it (the name and layout come from the folder).
    let tuned = eval_loss(&model("llama"), Some(&out));
    assert!(tuned < eval_loss(&model("llama"), None), "the trained adapter lowers the loss");
    let more = scratch("cli-seq-bn-more");
    let init = ["--method", "seq-bn", "--init-adapter", path(&out), "--steps", "1"];
    ok(&webtune(&train_args("llama", &more, &init)));
    let again: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(more.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!((again["name"].as_str(), &again["config"]), (Some("mine"), &config["config"]));
    // AdapterHub's own files (the fixture run's, written by `adapters`) load as well.
    let fixture = fixtures().join("adapterhub/llama/seq_bn/final");
    eval_loss(&model("llama"), Some(&fixture));

    // Houlsby on GPT-2: adapters after attention and after the MLP.
    let out = scratch("cli-double-seq-bn");
    ok(&webtune(&train_args("gpt2", &out, &["--method", "double-seq-bn", "--steps", "1"])));
    let keys = safetensors_header(&out.join("adapter.safetensors"));
    assert!(keys.contains_key("transformer.h.0.attention_adapters.adapters.adapter.adapter_up.weight"), "{keys:?}");
    assert!(keys.contains_key("transformer.h.1.output_adapters.adapters.adapter.adapter_up.weight"), "{keys:?}");
}

#[test]
fn ia3_and_dora_train_merge_and_evaluate_like_base_plus_adapter() {
    let out = scratch("cli-ia3");
    ok(&webtune(&train_args("qwen2", &out, &["--method", "ia3", "--steps", "2", "--lr", "3e-2"])));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(config["peft_type"], "IA3");
    assert_eq!(config["feedforward_modules"], serde_json::json!(["down_proj"]));

    let out = scratch("cli-dora");
    let merged = scratch("cli-dora-merged");
    std::fs::remove_dir(&merged).ok();
    let flags = ["--dora", "--steps", "2", "--lr", "1e-2", "--merge-into", path(&merged)];
    ok(&webtune(&train_args("llama", &out, &flags)));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(config["use_dora"], true);
    for file in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
        assert!(merged.join(file).is_file(), "{file} missing from the merged folder");
    }
    let base = safetensors_header(&fixtures().join("llama/base/model.safetensors"));
    let written = safetensors_header(&merged.join("model.safetensors"));
    assert_eq!(base.keys().collect::<Vec<_>>(), written.keys().collect::<Vec<_>>());
    for (key, info) in &base {
        assert_eq!((&info["dtype"], &info["shape"]), (&written[key]["dtype"], &written[key]["shape"]), "{key}");
    }
    // The merged model alone evaluates as the base with the adapter.
    let with_adapter = eval_loss(&model("llama"), Some(&out));
    let merged_loss = eval_loss(path(&merged), None);
    assert!((with_adapter - merged_loss).abs() < 1e-4, "merged {merged_loss} vs base + adapter {with_adapter}");
    assert!((with_adapter - eval_loss(&model("llama"), None)).abs() > 1e-3, "training changed nothing");

    // `webtune merge` writes the same folder from the saved adapter.
    let again = scratch("cli-dora-merge-again");
    ok(&webtune(&["merge", "--model", &model("llama"), "--adapter", path(&out), "--out", path(&again)]));
    assert!(
        std::fs::read(again.join("model.safetensors")).unwrap()
            == std::fs::read(merged.join("model.safetensors")).unwrap()
    );
    // Into a folder in use: refused, nothing touched.
    let error = failed(&webtune(&["merge", "--model", &model("llama"), "--adapter", path(&out), "--out", path(&out)]));
    assert!(error.contains("not empty"), "{error}");
}

#[test]
fn gguf_beside_the_peft_files_for_plain_lora_only() {
    let out = scratch("cli-gguf");
    ok(&webtune(&train_args("llama", &out, &["--steps", "1", "--gguf"])));
    let gguf = std::fs::read(out.join("adapter.gguf")).unwrap();
    assert_eq!(&gguf[..4], b"GGUF");
    assert!(out.join("adapter_model.safetensors").is_file());

    for (flags, words) in [
        (&["--method", "ia3", "--gguf"][..], &["--gguf", "ia3", "llama.cpp"][..]),
        (&["--dora", "--gguf"], &["--gguf", "dora", "llama.cpp"]),
        (&["--method", "seq-bn", "--merge-into", "/nonexistent-merge"], &["--merge-into", "seq_bn", "adapterhub"]),
        (&["--method", "prompt-tuning", "--dora"], &["\"dora\"", "\"lora\"", "prompt-tuning"]),
        (&["--method", "seq-bn", "--non-linearity", "swishy"], &["non_linearity", "swishy", "gelu_new"]),
        (&["--method", "seq-bn", "--init", "xavier"], &["xavier", "bert", "mam_adapter"]),
    ] {
        let out = scratch("cli-refused");
        let args = train_args("llama", &out, &[flags, &["--steps", "1"]].concat());
        let error = failed(&webtune(&args));
        for word in words {
            assert!(error.contains(word), "{flags:?}: \"{word}\" not in: {error}");
        }
        let left: Vec<_> = std::fs::read_dir(&out).map(|d| d.collect()).unwrap_or_default();
        assert!(left.is_empty(), "{flags:?}: a refused run wrote {left:?}");
    }
}

#[test]
fn pickled_adapters_are_refused_with_how_to_resave_them() {
    for pickle in ["pytorch_adapter.bin", "adapter_model.bin"] {
        let dir = scratch("cli-pickle");
        std::fs::write(dir.join("adapter_config.json"), "{}").unwrap();
        std::fs::write(dir.join(pickle), b"\x80\x02}q\x00.").unwrap();
        let out = scratch("cli-pickle-out");
        let error = failed(&webtune(&train_args("llama", &out, &["--init-adapter", path(&dir), "--steps", "1"])));
        assert!(error.contains(pickle) && error.contains("safetensors"), "{error}");
    }
}
