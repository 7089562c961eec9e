//! `webtune eval`: mean token loss and perplexity of a model (with an optional adapter) on a
//! dataset, with the same label masks as training (`session::evaluate`, as `WebAdapter.evaluate`).

use std::path::PathBuf;

use webtune::model::Model;
use webtune::model::files::Folder;
use webtune::options::{DEFAULTS, TrainingOptions};
use webtune::peft::Adapter;
use webtune::session::{self, DataFile};
use webtune::{Result, device};

use crate::block;
use crate::train::{print_dataset, read, read_adapter};

/// The data options of `webtune train`, with its names and defaults.
#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    model: PathBuf,
    /// Adapter folder (PEFT or AdapterHub); without it the base model is evaluated.
    #[arg(long)]
    adapter: Option<PathBuf>,
    #[arg(long)]
    data: PathBuf,
    /// Examples per forward pass.
    #[arg(long, default_value_t = DEFAULTS.batch_size)]
    batch_size: usize,
    /// Truncate examples to this many tokens.
    #[arg(long, default_value_t = DEFAULTS.max_len)]
    max_len: usize,
    /// Jinja template for {"instruction","input","output"} rows (default: Alpaca).
    #[arg(long)]
    template: Option<String>,
    /// Skip malformed rows (reported with their line numbers) instead of stopping.
    #[arg(long)]
    skip_bad_rows: bool,
}

pub fn run(args: Args) -> Result<()> {
    let folder = Folder::new(&args.model)?;
    let (device, _) = device::gpu()?;
    let model = Model::load(&folder, &device)?;
    let options = TrainingOptions {
        batch_size: args.batch_size,
        max_len: args.max_len,
        template: args.template.clone(),
        skip_bad_rows: args.skip_bad_rows,
        ..DEFAULTS
    };
    let adapter = match &args.adapter {
        Some(dir) => read_adapter(dir, &model)?,
        None => Adapter::none(&model.lm),
    };
    let name = args.data.display().to_string();
    let bytes = read(&args.data)?;
    let result = block(session::evaluate(&model, &adapter, DataFile { name: &name, bytes: &bytes }, &options))?;
    print_dataset(&name, &result.report, options.max_len);
    println!(
        "eval loss {:.6}  perplexity {:.4}  ({} examples, {} supervised tokens)",
        result.loss, result.perplexity, result.report.rows, result.report.supervised_tokens
    );
    Ok(())
}
