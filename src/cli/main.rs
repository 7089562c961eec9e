//! The `webtune` command line: the same core as the browser build, on the native GPU.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod eval;
mod files;
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
