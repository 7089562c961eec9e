//! The `webtune` command line: the same core as the browser build, on the native GPU.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod logits;

#[derive(Parser)]
#[command(name = "webtune", version, about = "Fine-tune small language models with LoRA, PiSSA or prompt tuning on your GPU")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the base model on a text and print the top-5 next tokens.
    Logits(logits::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Logits(args) => logits::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Writes `bytes` to `path` atomically: a failed or interrupted write never leaves a partial
/// file where a good one was (write a sibling temp file, then rename over).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> webtune::Result<()> {
    use webtune::err;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let tmp: PathBuf = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(err!(Io, "cannot write {}: {e}", path.display()));
    }
    Ok(())
}
