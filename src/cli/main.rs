//! The `webtune` command line: the same core as the browser build, on the native GPU.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod eval;
mod files;
mod logits;
mod merge;
mod train;

#[derive(Parser)]
#[command(
    name = "webtune",
    version,
    about = "Fine-tune small language models with LoRA, PiSSA, DoRA, IA3, bottleneck adapters or prompt tuning on your GPU"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the base model on a text and print the top next tokens.
    Logits(logits::Args),
    /// Train an adapter and write it as PEFT files (AdapterHub's for bottleneck adapters).
    Train(Box<train::Args>),
    /// Fold a LoRA / PiSSA / DoRA / IA3 adapter into its base model: a Hugging Face model folder.
    Merge(merge::Args),
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
        Command::Merge(args) => merge::run(args),
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
