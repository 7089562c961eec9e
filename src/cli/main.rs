//! The `webtune` command line: the same core as the browser build, on the native GPU.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use webtune::err;

mod bench;
mod eval;
mod logits;
mod train;

#[derive(Parser)]
#[command(
    name = "webtune",
    version,
    about = "Fine-tune small language models with LoRA, PiSSA or prompt tuning on your GPU"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the base model on a text and print the top next tokens.
    Logits(logits::Args),
    /// Train a LoRA / PiSSA / prompt-tuning adapter and write it as PEFT files.
    Train(Box<train::Args>),
    /// Evaluate a model (optionally with an adapter) on a dataset: loss and perplexity.
    Eval(eval::Args),
    /// Measure a LoRA training step on a SmolLM2-135M-shaped model; prints one JSON line.
    Bench(bench::Args),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Logits(args) => logits::run(args),
        Command::Train(args) => train::run(*args),
        Command::Eval(args) => eval::run(args),
        Command::Bench(args) => bench::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Waits for a core future (GPU readbacks); natively that is a plain block.
pub fn block<F: std::future::Future>(future: F) -> F::Output {
    burn::tensor::read_sync(future)
}

/// Writes files so that a failure never leaves a partial file where a good one was: every file
/// is first written in full beside its target, and only then renamed over it.
pub fn write_files_atomic(files: &[(PathBuf, Vec<u8>)]) -> webtune::Result<()> {
    let temp = |path: &Path| {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
        path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
    };
    let cleanup = || files.iter().for_each(|(path, _)| drop(std::fs::remove_file(temp(path))));
    for (path, bytes) in files {
        if let Err(e) = std::fs::write(temp(path), bytes) {
            cleanup();
            return Err(err!(Io, "cannot write {}: {e}", path.display()));
        }
    }
    for (path, _) in files {
        if let Err(e) = std::fs::rename(temp(path), path) {
            cleanup();
            return Err(err!(Io, "cannot write {}: {e}", path.display()));
        }
    }
    Ok(())
}
