//! `webtune logits`: run the base model on a text; print the last position's top tokens and
//! optionally write every position's logits as safetensors.

use std::collections::BTreeMap;
use std::path::PathBuf;

use webtune::model::files::Folder;
use webtune::model::weights::{HostTensor, encode_safetensors};
use webtune::model::{LoadOptions, Model, NoAdapter, WeightsDtype};
use webtune::{device, readback};

#[derive(clap::Args)]
pub struct Args {
    /// Hugging Face model folder (config.json, safetensors, tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// Text to run the model on.
    #[arg(long)]
    text: String,
    /// Write all logits `[tokens, vocab]` here as safetensors (key "logits"; the token ids are in
    /// the metadata as "input_ids").
    #[arg(long)]
    out: Option<PathBuf>,
    /// How many top tokens to print.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Tokenise without the tokenizer's special tokens (e.g. no BOS).
    #[arg(long)]
    no_special_tokens: bool,
    /// Storage width of the frozen weights: auto (f16 for an F16/BF16 checkpoint where the
    /// device computes in f16), f16 or f32.
    #[arg(long, default_value = "auto", value_parser = WeightsDtype::parse)]
    weights_dtype: WeightsDtype,
}

pub fn run(args: Args) -> webtune::Result<()> {
    let folder = Folder::new(&args.model)?;
    let (device, _) = device::gpu()?;
    let options = LoadOptions { weights_dtype: args.weights_dtype, ..LoadOptions::default() };
    let model = Model::load_with(&folder, &device, &options)?;
    let report = &model.lm.report;
    eprintln!(
        "weights: {} checkpoint stored as {} ({}): {:.1} MiB on the device",
        report.checkpoint_dtype,
        report.weights_dtype,
        report.reason,
        report.weight_bytes as f64 / 1_048_576.0
    );
    let ids = model.tokenizer.encode(&args.text, !args.no_special_tokens)?;
    if ids.is_empty() {
        return Err(webtune::err!(InvalidOptions, "--text gives no tokens"));
    }
    let logits = model.lm.forward(&ids, 1, None, &NoAdapter)?;
    let vocab = model.lm.config.vocab_size;
    let values = crate::block(readback::floats(logits))?;
    let last = &values[(ids.len() - 1) * vocab..];
    println!("{} tokens: {:?}", ids.len(), ids);
    for (rank, (id, logit, prob)) in top_k(last, args.top).into_iter().enumerate() {
        println!(
            "{:>2}. {:>6} {:<20} logit {:>9.4}  p {:.4}",
            rank + 1,
            id,
            format!("{:?}", model.tokenizer.token_text(id)),
            logit,
            prob
        );
    }
    if let Some(out) = args.out {
        let mut tensors = BTreeMap::new();
        tensors.insert("logits".to_owned(), HostTensor { shape: vec![ids.len(), vocab], data: values });
        let metadata = [("input_ids".to_owned(), format!("{ids:?}"))].into_iter().collect();
        crate::files::write_files_atomic(&[(out.clone(), encode_safetensors(&tensors, Some(metadata)))])?;
        println!("wrote {}", out.display());
    }
    Ok(())
}

/// The `k` largest logits with their softmax probabilities, best first.
fn top_k(logits: &[f32], k: usize) -> Vec<(u32, f32, f32)> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let total: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    order
        .into_iter()
        .take(k)
        .map(|i| (i as u32, logits[i], (((logits[i] - max) as f64).exp() / total) as f32))
        .collect()
}
