//! `webtune merge`: fold a trained adapter (LoRA, PiSSA, DoRA, IA3) into its base model and write
//! the result as a Hugging Face model folder, streamed tensor by tensor (`peft::merge`).

use std::path::PathBuf;

use webtune::model::Model;
use webtune::model::files::Folder;
use webtune::{Result, device};

use crate::train::{check_merge_target, read_adapter, write_merged};

#[derive(clap::Args)]
pub struct Args {
    /// Hugging Face model folder the adapter was trained on.
    #[arg(long)]
    model: PathBuf,
    /// Adapter folder (PEFT files).
    #[arg(long)]
    adapter: PathBuf,
    /// The new or empty folder the merged model is written into.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let (device, _) = device::gpu()?;
    let model = Model::load(&Folder::new(&args.model)?, &device)?;
    let adapter = read_adapter(&args.adapter, &model)?;
    check_merge_target(&adapter, &args.out)?;
    write_merged(&args.model, &model, &adapter, &args.out)
}
