//! `webtune train`: fine-tune a model folder on a dataset file and write a PEFT adapter, a
//! `metrics.jsonl` log and (with `--checkpoint-every`) a resumable checkpoint into `--out`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use webtune::data::{Dataset, load_dataset, split_eval};
use webtune::model::Model;
use webtune::model::files::Folder;
use webtune::options::{Method, TrainingOptions};
use webtune::peft::files::{self, ModelCard, export, import};
use webtune::train::{Schedule, StepMetrics, Trainer};
use webtune::{Result, device, err};

use crate::{block, write_files_atomic};

pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
pub const METRICS_FILE: &str = "metrics.jsonl";

#[derive(clap::Args)]
pub struct Args {
    /// Hugging Face model folder (config.json, safetensors, tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// Training data: .jsonl, .json, .csv or .txt.
    #[arg(long)]
    data: PathBuf,
    /// Evaluation data (same formats); otherwise see --eval-split.
    #[arg(long)]
    eval_data: Option<PathBuf>,
    /// Where the adapter, metrics.jsonl and checkpoints go.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, value_parser = ["lora", "prompt-tuning"], default_value = "lora")]
    method: String,
    /// LoRA: default | gaussian | pissa | pissa_niter_K; prompt tuning: random | text | sample-vocab.
    #[arg(long)]
    init: Option<String>,
    /// Text whose embeddings start the virtual tokens (prompt tuning, implies --init text).
    #[arg(long)]
    init_text: Option<String>,
    #[arg(long, default_value_t = 8)]
    r: usize,
    #[arg(long, default_value_t = 16.0)]
    alpha: f64,
    #[arg(long, default_value_t = 0.0)]
    dropout: f64,
    /// LoRA target module suffixes, comma separated (default: PEFT's for the architecture).
    #[arg(long, value_delimiter = ',')]
    targets: Option<Vec<String>>,
    /// rsLoRA scaling alpha / sqrt(r).
    #[arg(long)]
    rslora: bool,
    #[arg(long, default_value_t = 20)]
    virtual_tokens: usize,
    /// Learning rate (default 2e-4 for LoRA, 3e-2 for prompt tuning).
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    #[arg(long, value_parser = ["constant", "linear", "cosine"], default_value = "linear")]
    schedule: String,
    #[arg(long, default_value_t = 0)]
    warmup_steps: usize,
    #[arg(long, default_value_t = 4)]
    batch_size: usize,
    #[arg(long, default_value_t = 1)]
    grad_accum: usize,
    /// Clip the global gradient norm (0 disables).
    #[arg(long, default_value_t = 1.0)]
    clip: f64,
    /// Optimizer steps (overrides --epochs).
    #[arg(long)]
    steps: Option<usize>,
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Truncate examples to this many tokens.
    #[arg(long, default_value_t = 512)]
    max_len: usize,
    #[arg(long)]
    eval_every: Option<usize>,
    /// Hold out this fraction of --data for evaluation when no --eval-data is given.
    #[arg(long, default_value_t = 0.0)]
    eval_split: f64,
    #[arg(long)]
    early_stopping_patience: Option<usize>,
    #[arg(long, default_value_t = 0.0)]
    early_stopping_threshold: f64,
    /// Keep the file order instead of a seeded shuffle each epoch.
    #[arg(long)]
    no_shuffle: bool,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Jinja template for {"instruction","input","output"} rows (default: Alpaca).
    #[arg(long)]
    template: Option<String>,
    /// Skip malformed rows (reported with their line numbers) instead of stopping.
    #[arg(long)]
    skip_bad_rows: bool,
    /// Start from this PEFT adapter folder instead of a fresh adapter.
    #[arg(long)]
    init_adapter: Option<PathBuf>,
    /// Write a PiSSA adapter as a plain LoRA (rank 2r) that applies to the original base model.
    #[arg(long)]
    export_pissa_as_lora: bool,
    /// Save a resumable checkpoint every N steps (and at the end).
    #[arg(long)]
    checkpoint_every: Option<usize>,
    /// Continue from the checkpoint in --out.
    #[arg(long)]
    resume: bool,
}

impl Args {
    fn options(&self) -> TrainingOptions {
        TrainingOptions {
            method: if self.method == "lora" { Method::Lora } else { Method::PromptTuning },
            init: self.init.clone(),
            init_text: self.init_text.clone(),
            r: self.r,
            alpha: self.alpha,
            dropout: self.dropout,
            targets: self.targets.clone(),
            rslora: self.rslora,
            virtual_tokens: self.virtual_tokens,
            lr: self.lr,
            weight_decay: self.weight_decay,
            schedule: Schedule::parse(&self.schedule).expect("clap checked the schedule"),
            warmup_steps: self.warmup_steps,
            batch_size: self.batch_size,
            grad_accum: self.grad_accum,
            clip: Some(self.clip),
            steps: self.steps,
            epochs: self.epochs,
            max_len: self.max_len,
            eval_every: self.eval_every,
            early_stopping_patience: self.early_stopping_patience,
            early_stopping_threshold: self.early_stopping_threshold,
            shuffle: !self.no_shuffle,
            seed: self.seed,
            template: self.template.clone(),
            skip_bad_rows: self.skip_bad_rows,
            eval_split: self.eval_split,
            ..TrainingOptions::default()
        }
    }
}

/// Reads and tokenises a dataset file, printing what was found.
pub fn read_dataset(path: &Path, model: &Model, options: &TrainingOptions) -> Result<Dataset> {
    let bytes = std::fs::read(path).map_err(|e| err!(Io, "cannot read {}: {e}", path.display()))?;
    let name = path.display().to_string();
    let dataset = load_dataset(&name, &bytes, &model.tokenizer, &options.data_options())?;
    let r = &dataset.report;
    eprintln!(
        "{name}: {} examples, {}–{} tokens (mean {:.1}), {} supervised tokens{}{}",
        r.rows,
        r.min_tokens,
        r.max_tokens,
        r.mean_tokens,
        r.supervised_tokens,
        if r.truncated > 0 {
            format!(", {} truncated to {} tokens", r.truncated, options.max_len)
        } else {
            String::new()
        },
        if r.no_supervised_tokens > 0 {
            format!(", {} without supervised tokens skipped", r.no_supervised_tokens)
        } else {
            String::new()
        },
    );
    if !r.bad_rows.is_empty() {
        eprintln!("{name}: skipped {} bad rows:", r.bad_rows.len());
        for bad in r.bad_rows.iter().take(20) {
            eprintln!("  line {}: {}", bad.line, bad.reason);
        }
    }
    Ok(dataset)
}

/// Loads a PEFT adapter folder for `model`.
pub fn read_adapter(dir: &Path, model: &Model) -> Result<webtune::peft::Adapter> {
    let read = |name: &str| {
        std::fs::read(dir.join(name)).map_err(|e| err!(InvalidAdapter, "cannot read {}: {e}", dir.join(name).display()))
    };
    let config = String::from_utf8(read(files::CONFIG_FILE)?)
        .map_err(|_| err!(InvalidAdapter, "{} is not UTF-8", files::CONFIG_FILE))?;
    block(import(&config, &read(files::WEIGHTS_FILE)?, &model.lm))
}

pub fn run(args: Args) -> Result<()> {
    let options = args.options();
    let train_config = options.train_config()?;
    let folder = Folder::new(&args.model)?;
    std::fs::create_dir_all(&args.out).map_err(|e| err!(Io, "cannot create {}: {e}", args.out.display()))?;
    let (device, gpu) = device::gpu()?;
    eprintln!("GPU: {} ({})", gpu.name, gpu.backend);
    let model = Model::load(&folder, &device)?;
    let train = read_dataset(&args.data, &model, &options)?.examples;
    let (train, eval) = match &args.eval_data {
        Some(path) => (train, read_dataset(path, &model, &options)?.examples),
        None => split_eval(train, options.eval_split, options.seed),
    };
    let adapter = match &args.init_adapter {
        Some(dir) => read_adapter(dir, &model)?,
        None => block(options.init_adapter(&model))?,
    };
    let trainable: usize = adapter.params().iter().map(|(_, t)| t.dims().iter().product::<usize>()).sum();
    let mut trainer = Trainer::new(model.lm.clone(), adapter, train, eval, train_config, model.pad_id())?;
    let checkpoint_path = args.out.join(CHECKPOINT_FILE);
    if args.resume {
        let bytes = std::fs::read(&checkpoint_path)
            .map_err(|e| err!(Io, "cannot resume: {}: {e}", checkpoint_path.display()))?;
        trainer.restore(&bytes)?;
        eprintln!("resumed from {} at step {}", checkpoint_path.display(), trainer.steps_done());
    }
    eprintln!("{trainable} trainable parameters; {} steps", trainer.total_steps());

    let metrics_path = args.out.join(METRICS_FILE);
    let mut metrics_file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(args.resume)
        .truncate(!args.resume)
        .open(&metrics_path)
        .map_err(|e| err!(Io, "cannot write {}: {e}", metrics_path.display()))?;
    let mut progress = Progress::new(trainer.steps_done(), trainer.total_steps());
    let mut last: Option<StepMetrics> = None;
    while !trainer.is_done() {
        let metrics = block(trainer.step())?;
        writeln!(metrics_file, "{}", serde_json::to_string(&metrics).expect("metrics serialise"))
            .map_err(|e| err!(Io, "cannot write {}: {e}", metrics_path.display()))?;
        progress.show(&metrics);
        if args.checkpoint_every.is_some_and(|n| metrics.step % n == 0) {
            write_files_atomic(&[(checkpoint_path.clone(), block(trainer.checkpoint())?)])?;
        }
        if metrics.early_stopped {
            eprintln!(
                "early stopping at step {}: the eval loss did not improve by more than {} for {} evaluations",
                metrics.step,
                options.early_stopping_threshold,
                options.early_stopping_patience.unwrap_or_default()
            );
        }
        last = Some(metrics);
    }
    progress.finish();
    if args.checkpoint_every.is_some() {
        write_files_atomic(&[(checkpoint_path, block(trainer.checkpoint())?)])?;
    }

    let eval_loss = trainer.best_eval_loss().or(last.as_ref().and_then(|m| m.eval_loss));
    if let Some(best) = trainer.best_eval_loss() {
        eprintln!("kept the best adapter: eval loss {best:.4}");
    }
    let card = ModelCard {
        steps: Some(trainer.steps_done()),
        final_loss: last.as_ref().map(|m| m.loss),
        eval_loss,
        dataset: args.data.file_name().map(|n| n.to_string_lossy().into_owned()),
    };
    let base = args.model.display().to_string();
    let saved = block(export(trainer.adapter(), &base, args.export_pissa_as_lora, &card))?;
    write_files_atomic(&[
        (args.out.join(files::WEIGHTS_FILE), saved.weights),
        (args.out.join(files::CONFIG_FILE), saved.config_json.into_bytes()),
        (args.out.join(files::README_FILE), saved.readme.into_bytes()),
    ])?;
    println!("wrote the adapter to {}", args.out.display());
    Ok(())
}

/// A one-line progress bar on stderr: step, loss, tokens/s, ETA.
struct Progress {
    start: Instant,
    first_step: usize,
    total: usize,
    tokens: usize,
    eval: Option<f64>,
}

impl Progress {
    fn new(first_step: usize, total: usize) -> Self {
        Progress { start: Instant::now(), first_step, total, tokens: 0, eval: None }
    }

    fn show(&mut self, m: &StepMetrics) {
        self.tokens += m.tokens;
        self.eval = m.eval_loss.or(self.eval);
        let elapsed = self.start.elapsed().as_secs_f64();
        let done = m.step - self.first_step;
        let eta = elapsed / done as f64 * (self.total - m.step) as f64;
        let width = 24;
        let filled = width * m.step / self.total.max(1);
        let bar = format!("{}{}", "#".repeat(filled), ".".repeat(width - filled));
        let eval = self.eval.map(|e| format!(" eval {e:.4} |")).unwrap_or_default();
        // Redraw one line on a terminal; one line per step in logs.
        let (start, end) = if std::io::stderr().is_terminal() { ("\r", "   ") } else { ("", "\n") };
        eprint!(
            "{start}step {}/{} [{bar}] loss {:.4} |{eval} lr {:.2e} | {:.0} tok/s | ETA {}{end}",
            m.step,
            self.total,
            m.loss,
            m.lr,
            self.tokens as f64 / elapsed.max(1e-9),
            format_duration(eta)
        );
        let _ = std::io::stderr().flush();
    }

    fn finish(&self) {
        let newline = if std::io::stderr().is_terminal() { "\n" } else { "" };
        eprintln!("{newline}done in {}", format_duration(self.start.elapsed().as_secs_f64()));
    }
}

fn format_duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    if s >= 3600 { format!("{}h{:02}m", s / 3600, s % 3600 / 60) } else { format!("{}m{:02}s", s / 60, s % 60) }
}
