//! `webtune train`: fine-tune a model folder on a dataset file and write the adapter (PEFT files,
//! or AdapterHub's for bottleneck adapters; with `--gguf` also `adapter.gguf`), a `metrics.jsonl`
//! log and (with `--checkpoint-every`) a resumable checkpoint into `--out`; with `--merge-into`, a
//! merged model folder.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use webtune::data::DatasetReport;
use webtune::model::Model;
use webtune::model::files::Folder;
use webtune::options::TrainingOptions;
use webtune::peft::files::ModelCard;
use webtune::peft::merge::{MAX_SHARD_BYTES, MergedModel, write_folder};
use webtune::peft::{Adapter, ExportFormat};
use webtune::session::{self, DataFile, Run, TrainReport};
use webtune::train::StepMetrics;
use webtune::{Result, device, err};

use crate::block;
use crate::files::write_files_atomic;

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
    #[command(flatten)]
    options: TrainingOptions,
    /// Start from this adapter folder (PEFT, or AdapterHub for bottleneck adapters) instead of a
    /// fresh adapter.
    #[arg(long)]
    init_adapter: Option<PathBuf>,
    /// Also write adapter.gguf (llama.cpp's --lora) beside the PEFT files: plain LoRA only.
    #[arg(long)]
    gguf: bool,
    /// After training, write the base model with the adapter folded in (a Hugging Face model
    /// folder) into this new or empty folder: LoRA, PiSSA, DoRA and IA3.
    #[arg(long)]
    merge_into: Option<PathBuf>,
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

/// Reads a file the user named.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| err!(Io, "cannot read {}: {e}", path.display()))
}

/// Prints what loading a dataset file found.
pub fn print_dataset(name: &str, r: &DatasetReport, max_len: usize) {
    let truncated =
        if r.truncated > 0 { format!(", {} truncated to {max_len} tokens", r.truncated) } else { String::new() };
    let skipped = if r.no_supervised_tokens > 0 {
        format!(", {} without supervised tokens skipped", r.no_supervised_tokens)
    } else {
        String::new()
    };
    eprintln!(
        "{name}: {} examples, {}–{} tokens (mean {:.1}), {} supervised tokens{truncated}{skipped}",
        r.rows, r.min_tokens, r.max_tokens, r.mean_tokens, r.supervised_tokens,
    );
    if !r.bad_rows.is_empty() {
        eprintln!("{name}: skipped {} bad rows:", r.bad_rows.len());
        for bad in r.bad_rows.iter().take(20) {
            eprintln!("  line {}: {}", bad.line, bad.reason);
        }
    }
}

/// Loads an adapter folder (PEFT or AdapterHub) for `model`.
pub fn read_adapter(dir: &Path, model: &Model) -> Result<Adapter> {
    if !dir.is_dir() {
        return Err(err!(FileMissing, "adapter folder {} does not exist", dir.display()));
    }
    block(webtune::peft::read_adapter(&Folder::new(dir)?, &model.lm))
}

/// The formats the run writes: the adapter's own (AdapterHub for bottleneck adapters, else PEFT),
/// and GGUF when asked.
fn export_formats(adapter: &Adapter, gguf: bool) -> Result<Vec<ExportFormat>> {
    let own = if adapter.export_formats().contains(&ExportFormat::Peft) {
        ExportFormat::Peft
    } else {
        ExportFormat::AdapterHub
    };
    let mut formats = vec![own];
    if gguf {
        adapter.check_export(ExportFormat::Gguf).map_err(|e| err!(InvalidOptions, "--gguf: {}", e.message))?;
        formats.push(ExportFormat::Gguf);
    }
    Ok(formats)
}

/// Refuses `--merge-into` before training when the adapter cannot be merged or the folder is in use.
pub fn check_merge_target(adapter: &Adapter, out: &Path) -> Result<()> {
    adapter.check_export(ExportFormat::Merged).map_err(|e| err!(InvalidOptions, "--merge-into: {}", e.message))?;
    let occupied = std::fs::read_dir(out).map(|mut entries| entries.next().is_some()).unwrap_or(false);
    if occupied {
        return Err(err!(
            InvalidOptions,
            "--merge-into: {} is not empty; a merged model is written only into a new or empty folder",
            out.display()
        ));
    }
    Ok(())
}

/// Writes `model` with `adapter` folded in as a Hugging Face model folder in `out`.
pub fn write_merged(model_dir: &Path, model: &Model, adapter: &Adapter, out: &Path) -> Result<()> {
    let merged =
        MergedModel::new(model.lm.clone(), adapter.clone(), Box::new(Folder::new(model_dir)?), MAX_SHARD_BYTES)?;
    block(write_folder(merged, out))?;
    println!("wrote the merged model to {}", out.display());
    Ok(())
}

fn print_report(args: &Args, report: &TrainReport) {
    print_dataset(&args.data.display().to_string(), &report.train, args.options.max_len);
    if let (Some(path), Some(eval)) = (&args.eval_data, &report.eval) {
        print_dataset(&path.display().to_string(), eval, args.options.max_len);
    }
    let facts = &report.facts;
    eprintln!(
        "{} trainable parameters in {} layers; about {:.0} MB of GPU memory ({:.0} MB weights, {:.0} MB activations{})",
        facts.trainable_parameters,
        facts.layers.len(),
        facts.memory.total as f64 / 1e6,
        facts.memory.weights as f64 / 1e6,
        facts.memory.activations as f64 / 1e6,
        if facts.memory.recompute_layers { ", layers recomputed in the backward pass (--recompute)" } else { "" },
    );
}

/// The lines of `metrics.jsonl` up to step `last`: what a run resumed after step `last` keeps
/// (the interrupted run may have logged steps after its last checkpoint, which run again).
fn metrics_until(path: &Path, last: usize) -> Result<Vec<u8>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(err!(Io, "cannot read {}: {e}", path.display())),
    };
    let step = |line: &str| serde_json::from_str::<serde_json::Value>(line).ok()?["step"].as_u64();
    let kept: String = text
        .lines()
        .filter(|line| step(line).is_some_and(|s| s as usize <= last))
        .flat_map(|line| [line, "\n"])
        .collect();
    Ok(kept.into_bytes())
}

pub fn run(args: Args) -> Result<()> {
    let options = &args.options;
    // Bad options fail before anything is loaded.
    options.train_config()?;
    let folder = Folder::new(&args.model)?;
    std::fs::create_dir_all(&args.out).map_err(|e| err!(Io, "cannot create {}: {e}", args.out.display()))?;
    let (device, gpu) = device::gpu()?;
    eprintln!("GPU: {} ({})", gpu.name, gpu.backend);
    let model = Model::load(&folder, &device)?;
    let (train_name, train_bytes) = (args.data.display().to_string(), read(&args.data)?);
    let eval = match &args.eval_data {
        Some(path) => Some((path.display().to_string(), read(path)?)),
        None => None,
    };
    let adapter = args.init_adapter.as_deref().map(|dir| read_adapter(dir, &model)).transpose()?;
    let Run { mut trainer, report } = block(session::prepare(
        &model,
        DataFile { name: &train_name, bytes: &train_bytes },
        eval.as_ref().map(|(name, bytes)| DataFile { name, bytes }),
        options,
        adapter,
    ))?;
    print_report(&args, &report);
    let formats = export_formats(trainer.adapter(), args.gguf)?;
    if let Some(out) = &args.merge_into {
        check_merge_target(trainer.adapter(), out)?;
    }
    let checkpoint_path = args.out.join(CHECKPOINT_FILE);
    let metrics_path = args.out.join(METRICS_FILE);
    if args.resume {
        trainer.restore(&read(&checkpoint_path)?)?;
        eprintln!("resumed from {} at step {}", checkpoint_path.display(), trainer.steps_done());
        write_files_atomic(&[(metrics_path.clone(), metrics_until(&metrics_path, trainer.steps_done())?)])?;
    }
    eprintln!("{} steps", trainer.total_steps());

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
    let mut saved = Vec::new();
    for format in formats {
        let files = block(session::export(&model, trainer.adapter(), format, &base, args.export_pissa_as_lora, &card))?;
        saved.extend(files.into_iter().map(|(name, bytes)| (args.out.join(name), bytes)));
    }
    write_files_atomic(&saved)?;
    println!("wrote the adapter to {}", args.out.display());
    if let Some(out) = &args.merge_into {
        write_merged(&args.model, &model, trainer.adapter(), out)?;
    }
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
