//! `webtune eval`: mean token loss and perplexity of a model (with an optional adapter) on a
//! dataset, with the same label masks as training.

use std::path::PathBuf;

use webtune::model::Model;
use webtune::model::files::Folder;
use webtune::options::TrainingOptions;
use webtune::peft::Adapter;
use webtune::{Result, device, train};

use crate::block;
use crate::train::{read_adapter, read_dataset};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    model: PathBuf,
    /// PEFT adapter folder; without it the base model is evaluated.
    #[arg(long)]
    adapter: Option<PathBuf>,
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    #[arg(long, default_value_t = 512)]
    max_len: usize,
    #[arg(long)]
    template: Option<String>,
    #[arg(long)]
    skip_bad_rows: bool,
}

pub fn run(args: Args) -> Result<()> {
    let folder = Folder::new(&args.model)?;
    let (device, _) = device::gpu()?;
    let model = Model::load(&folder, &device)?;
    let options = TrainingOptions {
        max_len: args.max_len,
        template: args.template.clone(),
        skip_bad_rows: args.skip_bad_rows,
        ..TrainingOptions::default()
    };
    let dataset = read_dataset(&args.data, &model, &options)?;
    let adapter = match &args.adapter {
        Some(dir) => read_adapter(dir, &model)?,
        None => Adapter::none(&model.lm),
    };
    let loss = block(train::evaluate(&model.lm, &adapter, &dataset.examples, args.batch_size, model.pad_id()))?;
    println!(
        "eval loss {loss:.6}  perplexity {:.4}  ({} examples, {} supervised tokens)",
        loss.exp(),
        dataset.report.rows,
        dataset.report.supervised_tokens
    );
    Ok(())
}
