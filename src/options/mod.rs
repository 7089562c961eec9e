//! Every user-facing training option in one place, with its default: the JS API passes it as a
//! plain object (camelCase keys, `npm/src/index.d.ts`'s `TrainingConfig`), and the CLI derives its
//! `webtune train` flags from the same struct (kebab-case: `gradAccum` is `--grad-accum`), so each
//! name, default and help text exists once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::err;
use crate::error::Result;
use crate::train::Schedule;

mod configs;

/// The fine-tuning method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// LoRA (and PiSSA, a LoRA initialisation).
    Lora,
    /// Trainable virtual tokens in front of every sequence.
    PromptTuning,
    /// A bottleneck adapter after every MLP (AdapterHub `seq_bn`, Pfeiffer).
    SeqBn,
    /// Bottleneck adapters after every attention and every MLP (AdapterHub `double_seq_bn`, Houlsby).
    DoubleSeqBn,
    /// IA3: learned vectors that scale attention outputs and feed-forward inputs (PEFT).
    Ia3,
}

impl Method {
    /// The name the options use (`seq-bn`).
    pub fn name(self) -> &'static str {
        match self {
            Method::Lora => "lora",
            Method::PromptTuning => "prompt-tuning",
            Method::SeqBn => "seq-bn",
            Method::DoubleSeqBn => "double-seq-bn",
            Method::Ia3 => "ia3",
        }
    }

    fn is_bottleneck(self) -> bool {
        matches!(self, Method::SeqBn | Method::DoubleSeqBn)
    }
}

/// Whether training keeps every decoder layer's activations for the backward pass or only each
/// layer's input, recomputing the layer there (`train::TrainConfig::recompute_layers`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Recompute {
    /// Recompute when keeping every layer's activations would take more than
    /// `session::memory::RECOMPUTE_ABOVE` bytes (the run's memory estimate decides).
    Auto,
    /// Always recompute: least memory, one more forward pass of the layers per step.
    On,
    /// Never recompute: fastest, most memory.
    Off,
}

/// The bottleneck adapter's name when `adapterName` is not given.
pub const DEFAULT_ADAPTER_NAME: &str = "adapter";

/// Every default, in one place: `TrainingOptions::default()`, the CLI's `--help` and the
/// documented defaults of `index.d.ts` (a test compares them) are these.
pub const DEFAULTS: TrainingOptions = TrainingOptions {
    method: Method::Lora,
    dora: false,
    init: None,
    init_text: None,
    r: 8,
    alpha: 16.0,
    dropout: 0.0,
    targets: None,
    rslora: false,
    rank_pattern: BTreeMap::new(),
    alpha_pattern: BTreeMap::new(),
    virtual_tokens: 20,
    reduction_factor: 16.0,
    non_linearity: None,
    adapter_name: None,
    feedforward_modules: None,
    lr: None,
    weight_decay: 0.0,
    schedule: Schedule::Linear,
    warmup_steps: 0,
    batch_size: 4,
    grad_accum: 1,
    clip: 1.0,
    steps: None,
    epochs: 1,
    max_len: 512,
    eval_every: None,
    early_stopping_patience: None,
    early_stopping_threshold: 0.0,
    shuffle: true,
    seed: 42,
    template: None,
    skip_bad_rows: false,
    eval_split: 0.0,
    recompute: Recompute::Auto,
};

// The `arg` attributes make the CLI's flags (clap, native builds only) and the doc comments are
// its help text. Booleans take an optional value: `--rslora` means `--rslora true`; `--shuffle false`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::Args))]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct TrainingOptions {
    /// The fine-tuning method.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, value_enum, default_value_t = DEFAULTS.method))]
    pub method: Method,
    /// DoRA (LoRA only): a trained magnitude per output row, PEFT's use_dora.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, action = clap::ArgAction::Set, num_args = 0..=1,
        default_missing_value = "true", default_value_t = DEFAULTS.dora))]
    pub dora: bool,
    /// LoRA: default | gaussian | pissa | pissa_niter_K; prompt tuning: random | text | sample-vocab;
    /// bottleneck adapters: bert | mam_adapter | houlsby (default: default / random, or text when
    /// an init text is given / bert).
    #[cfg_attr(not(target_arch = "wasm32"), arg(long))]
    pub init: Option<String>,
    /// Prompt tuning: the text whose token embeddings start the virtual tokens (implies init text).
    #[cfg_attr(not(target_arch = "wasm32"), arg(long))]
    pub init_text: Option<String>,
    /// LoRA rank.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = DEFAULTS.r))]
    pub r: usize,
    /// LoRA alpha: the update is scaled by alpha / r.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = DEFAULTS.alpha))]
    pub alpha: f64,
    /// LoRA dropout on the adapted layers' inputs.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = DEFAULTS.dropout))]
    pub dropout: f64,
    /// LoRA / IA3 target module-name suffixes, comma separated (default: PEFT's for the architecture).
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, value_delimiter = ','))]
    pub targets: Option<Vec<String>>,
    /// rsLoRA: scale by alpha / sqrt(r).
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, action = clap::ArgAction::Set, num_args = 0..=1,
        default_missing_value = "true", default_value_t = DEFAULTS.rslora))]
    pub rslora: bool,
    /// Per-module ranks, as PEFT's rank_pattern: q_proj=4,v_proj=16 (a pattern matches the end of
    /// a module path).
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, value_parser = patterns::<usize>, default_value = "",
        hide_default_value = true))]
    pub rank_pattern: BTreeMap<String, usize>,
    /// Per-module alphas, as PEFT's alpha_pattern: o_proj=4.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, value_parser = patterns::<f64>, default_value = "",
        hide_default_value = true))]
    pub alpha_pattern: BTreeMap<String, f64>,
    /// Prompt tuning: number of virtual tokens.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = DEFAULTS.virtual_tokens))]
    pub virtual_tokens: usize,
    /// Bottleneck adapters: the bottleneck width is floor(hidden size / reduction factor).
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = DEFAULTS.reduction_factor))]
    pub reduction_factor: f64,
    /// Bottleneck adapters: relu | swish | silu | gelu | gelu_new | tanh | ... (default: relu for
    /// seq-bn, swish for double-seq-bn, as AdapterHub's configs).
    #[cfg_attr(not(target_arch = "wasm32"), arg(long))]
    pub non_linearity: Option<String>,
    /// Bottleneck adapters: the name in every AdapterHub weight key (default: adapter).
    #[cfg_attr(not(target_arch = "wasm32"), arg(long))]
    pub adapter_name: Option<String>,
    /// IA3: the targets whose input (not output) is scaled, comma separated (default: PEFT's for
    /// the architecture, among the targets).
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, value_delimiter = ','))]
    pub feedforward_modules: Option<Vec<String>>,
    /// Learning rate (default 2e-4 for LoRA, 3e-2 for prompt tuning, 1e-4 for bottleneck adapters,
    /// 3e-3 for IA3).
    #[cfg_attr(not(target_arch = "wasm32"), arg(long))]
    pub lr: Option<f64>,
    /// AdamW weight decay.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = DEFAULTS.weight_decay))]
    pub weight_decay: f64,
    /// Learning-rate schedule after the warmup.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, value_enum, default_value_t = DEFAULTS.schedule))]
    pub schedule: Schedule,
    /// Steps of linear warmup from 0.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = DEFAULTS.warmup_steps))]
    pub warmup_steps: usize,
    /// Examples per forward pass (training and evaluation).
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = DEFAULTS.batch_size))]
    pub batch_size: usize,
    /// Batches whose gradients are summed per optimizer step.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = DEFAULTS.grad_accum))]
    pub grad_accum: usize,
    /// Clip the global gradient norm to this value (0 disables; so does null from JS).
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = DEFAULTS.clip))]
    #[serde(deserialize_with = "null_as_zero")]
    pub clip: f64,
    /// Optimizer steps (overrides epochs).
    #[cfg_attr(not(target_arch = "wasm32"), arg(long))]
    pub steps: Option<usize>,
    /// Passes over the training data (unless steps is set).
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = DEFAULTS.epochs))]
    pub epochs: usize,
    /// Truncate examples to this many tokens.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = DEFAULTS.max_len))]
    pub max_len: usize,
    /// Evaluate every N steps (and after the last); default: never.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long))]
    pub eval_every: Option<usize>,
    /// Stop after this many evaluations without improvement (and keep the best adapter).
    #[cfg_attr(not(target_arch = "wasm32"), arg(long))]
    pub early_stopping_patience: Option<usize>,
    /// The eval-loss improvement that resets the early-stopping patience.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = DEFAULTS.early_stopping_threshold))]
    pub early_stopping_threshold: f64,
    /// Shuffle the training examples each epoch (seeded); false keeps the file order.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, action = clap::ArgAction::Set, num_args = 0..=1,
        default_missing_value = "true", default_value_t = DEFAULTS.shuffle))]
    pub shuffle: bool,
    /// Seed of the adapter initialisation, shuffling, dropout and the eval split.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = DEFAULTS.seed))]
    pub seed: u64,
    /// Jinja template for {"instruction","input","output"} rows (default: Alpaca).
    #[cfg_attr(not(target_arch = "wasm32"), arg(long))]
    pub template: Option<String>,
    /// Skip malformed rows (reported with their line numbers) instead of stopping.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, action = clap::ArgAction::Set, num_args = 0..=1,
        default_missing_value = "true", default_value_t = DEFAULTS.skip_bad_rows))]
    pub skip_bad_rows: bool,
    /// Fraction of the training rows held out for evaluation when no eval data is given.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = DEFAULTS.eval_split))]
    pub eval_split: f64,
    /// Recompute each decoder layer in the backward pass instead of keeping its activations:
    /// auto (when they would exceed 512 MiB) | on | off.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, value_enum, default_value_t = DEFAULTS.recompute))]
    pub recompute: Recompute,
}

impl Default for TrainingOptions {
    fn default() -> Self {
        DEFAULTS
    }
}

fn null_as_zero<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(0.0))
}

/// Parses `name=value,name=value` (rank / alpha patterns on the command line); `""` is none.
#[cfg(not(target_arch = "wasm32"))]
fn patterns<T: std::str::FromStr>(text: &str) -> std::result::Result<BTreeMap<String, T>, String>
where
    T::Err: std::fmt::Display,
{
    text.split(',')
        .filter(|item| !item.trim().is_empty())
        .map(|item| {
            let (name, value) =
                item.split_once('=').ok_or_else(|| format!("\"{item}\" is not name=value (e.g. q_proj=4)"))?;
            let value = value.trim().parse().map_err(|e| format!("\"{item}\": {e}"))?;
            Ok((name.trim().to_owned(), value))
        })
        .collect()
}

/// Parses options from JSON (the JS API's objects). A misspelt key is an error that names the
/// intended key when it differs only in case, `-` or `_` (`batch_size` → `batchSize`).
pub fn from_json<T: serde::de::DeserializeOwned>(json: &str, what: &str) -> Result<T> {
    serde_json::from_str(json).map_err(|e| {
        let message = e.to_string();
        let hint = unknown_field_hint(&message).map(|near| format!(" (did you mean \"{near}\"?)")).unwrap_or_default();
        err!(InvalidOptions, "{what}: {}{hint}", message.replace('`', "\""))
    })
}

/// From serde's "unknown field `x`, expected one of `a`, `b`", the expected key that `x` means.
fn unknown_field_hint(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, expected) = rest.split_once('`')?;
    let squash = |k: &str| k.replace(['-', '_'], "").to_lowercase();
    expected.split('`').skip(1).step_by(2).find(|candidate| squash(candidate) == squash(field))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_rejected_with_a_hint() {
        let e = from_json::<TrainingOptions>(r#"{"batch_size": 4}"#, "config").unwrap_err();
        assert!(
            e.message.contains("unknown field \"batch_size\"") && e.message.contains("did you mean \"batchSize\"?"),
            "{e}"
        );
        let e = from_json::<TrainingOptions>(r#"{"bogus": 1}"#, "config").unwrap_err();
        assert!(!e.message.contains("did you mean"), "{e}");
        let ok: TrainingOptions = from_json(r#"{"batchSize": 2, "schedule": "cosine"}"#, "config").unwrap();
        assert_eq!((ok.batch_size, ok.schedule), (2, Schedule::Cosine));
    }
}
