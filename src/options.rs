//! Every user-facing training option in one place, with its default: the JS API passes it as a
//! plain object (camelCase keys, `npm/src/index.d.ts`'s `TrainingConfig`), and the CLI derives its
//! `webtune train` flags from the same struct (kebab-case: `gradAccum` is `--grad-accum`), so each
//! name, default and help text exists once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::data::DataOptions;
use crate::err;
use crate::error::Result;
use crate::model::{Architecture, Model};
use crate::peft::{
    Adapter, BottleneckAdapter, BottleneckConfig, BottleneckInit, Ia3Adapter, Ia3Config, LoraAdapter, LoraConfig,
    LoraInit, PromptAdapter, PromptConfig, PromptInit, ReductionFactor, default_targets,
};
use crate::train::{AdamWConfig, EarlyStopping, Schedule, TrainConfig};

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

impl TrainingOptions {
    pub fn data_options(&self) -> DataOptions {
        DataOptions { max_len: self.max_len, template: self.template.clone(), skip_bad_rows: self.skip_bad_rows }
    }

    pub fn learning_rate(&self) -> f64 {
        self.lr.unwrap_or(match self.method {
            Method::Lora => 2e-4,
            Method::PromptTuning => 3e-2,
            Method::SeqBn | Method::DoubleSeqBn => 1e-4,
            Method::Ia3 => 3e-3,
        })
    }

    /// Rejects options that belong to another method than the chosen one, naming the option and
    /// the methods it applies to.
    pub fn check_method(&self) -> Result<()> {
        let method = self.method;
        let only = |option: &str, applies: bool, methods: &str| {
            if applies {
                Ok(())
            } else {
                Err(err!(
                    InvalidOptions,
                    "option \"{option}\" applies only to method {methods}, not \"{}\"",
                    method.name()
                ))
            }
        };
        if self.dora {
            only("dora", method == Method::Lora, "\"lora\"")?;
        }
        if self.non_linearity.is_some() {
            only("nonLinearity", method.is_bottleneck(), "\"seq-bn\" or \"double-seq-bn\"")?;
        }
        if self.adapter_name.is_some() {
            only("adapterName", method.is_bottleneck(), "\"seq-bn\" or \"double-seq-bn\"")?;
        }
        if self.feedforward_modules.is_some() {
            only("feedforwardModules", method == Method::Ia3, "\"ia3\"")?;
        }
        if self.targets.is_some() {
            only("targets", matches!(method, Method::Lora | Method::Ia3), "\"lora\" or \"ia3\"")?;
        }
        if self.init_text.is_some() {
            only("initText", method == Method::PromptTuning, "\"prompt-tuning\"")?;
        }
        Ok(())
    }

    pub fn train_config(&self) -> Result<TrainConfig> {
        self.check_method()?;
        if self.max_len < 2 {
            return Err(err!(InvalidOptions, "max length must be at least 2 tokens"));
        }
        if !(0.0..1.0).contains(&self.eval_split) {
            return Err(err!(InvalidOptions, "eval split must be in [0, 1), got {}", self.eval_split));
        }
        if self.eval_every == Some(0) {
            return Err(err!(InvalidOptions, "eval every must be at least 1 step"));
        }
        Ok(TrainConfig {
            lr: self.learning_rate(),
            optimizer: AdamWConfig { weight_decay: self.weight_decay, ..AdamWConfig::default() },
            schedule: self.schedule,
            warmup_steps: self.warmup_steps,
            batch_size: self.batch_size,
            grad_accum: self.grad_accum,
            clip: Some(self.clip).filter(|&c| c > 0.0),
            max_steps: self.steps,
            epochs: self.epochs,
            eval_every: self.eval_every,
            early_stopping: self
                .early_stopping_patience
                .map(|patience| EarlyStopping { patience, threshold: self.early_stopping_threshold }),
            shuffle: self.shuffle,
            seed: self.seed,
            // `auto` is decided from the run's memory estimate (`session::prepare`).
            recompute_layers: self.recompute == Recompute::On,
        })
    }

    pub fn lora_config(&self, architecture: Architecture) -> Result<LoraConfig> {
        let init = match self.init.as_deref() {
            None | Some("default") => LoraInit::Default,
            Some(name) => LoraInit::from_peft_value(&serde_json::Value::String(name.to_owned())).map_err(|_| {
                err!(InvalidOptions, "LoRA init \"{name}\" is not one of default, gaussian, pissa, pissa_niter_K")
            })?,
        };
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(err!(InvalidOptions, "dropout must be in [0, 1), got {}", self.dropout));
        }
        Ok(LoraConfig {
            r: self.r,
            alpha: self.alpha,
            dropout: self.dropout,
            target_modules: self.targets.clone().unwrap_or_else(|| default_targets(architecture)),
            target_regex: false,
            use_rslora: self.rslora,
            rank_pattern: self.rank_pattern.clone(),
            alpha_pattern: self.alpha_pattern.clone(),
            init,
        })
    }

    pub fn prompt_config(&self) -> Result<PromptConfig> {
        let init = match (self.init.as_deref(), &self.init_text) {
            (None | Some("text"), Some(text)) => PromptInit::Text(text.clone()),
            (Some("text"), None) => return Err(err!(InvalidOptions, "init \"text\" needs an init text")),
            (None | Some("random"), None) => PromptInit::Random,
            (Some("sample-vocab" | "sample_vocab"), None) => PromptInit::SampleVocab,
            (Some(other), None) => {
                return Err(err!(
                    InvalidOptions,
                    "prompt-tuning init \"{other}\" is not one of random, text, sample-vocab"
                ));
            }
            (Some(other), Some(_)) => {
                return Err(err!(InvalidOptions, "an init text only applies to init \"text\", not \"{other}\""));
            }
        };
        Ok(PromptConfig { num_virtual_tokens: self.virtual_tokens, init })
    }

    /// AdapterHub's `SeqBnConfig` / `DoubleSeqBnConfig` with these options' reduction factor,
    /// non-linearity, init and name.
    pub fn bottleneck_config(&self) -> Result<BottleneckConfig> {
        let factor = self.reduction_factor;
        if !(factor > 0.0 && factor.is_finite()) {
            return Err(err!(InvalidOptions, "reduction factor must be a positive number, got {factor}"));
        }
        let name = self.adapter_name.as_deref().unwrap_or(DEFAULT_ADAPTER_NAME);
        let layout = match self.method {
            Method::DoubleSeqBn => BottleneckConfig::double_seq_bn,
            _ => BottleneckConfig::seq_bn,
        };
        let mut config = layout(name, ReductionFactor::Uniform(factor));
        if let Some(non_linearity) = &self.non_linearity {
            config.non_linearity = non_linearity.clone();
        }
        if let Some(init) = &self.init {
            config.init_weights = BottleneckInit::parse(init).map_err(|_| {
                err!(InvalidOptions, "bottleneck-adapter init \"{init}\" is not one of bert, mam_adapter, houlsby")
            })?;
        }
        config.validate()?;
        Ok(config)
    }

    /// PEFT's `IA3Config`: the given targets and feed-forward modules, else PEFT's defaults for
    /// the architecture (with given targets, the default feed-forward modules among them).
    pub fn ia3_config(&self, architecture: Architecture) -> Result<Ia3Config> {
        if self.init.is_some() {
            return Err(err!(
                InvalidOptions,
                "option \"init\" does not apply to method \"ia3\" (its vectors start at 1)"
            ));
        }
        let defaults = Ia3Config::for_model_type(architecture.name());
        let target_modules = match (&self.targets, &defaults) {
            (Some(targets), _) => targets.clone(),
            (None, Ok(defaults)) => defaults.target_modules.clone(),
            (None, Err(_)) => return defaults,
        };
        let feedforward_modules = match (&self.feedforward_modules, &defaults) {
            (Some(feedforward), _) => feedforward.clone(),
            (None, Ok(defaults)) => {
                defaults.feedforward_modules.iter().filter(|f| target_modules.contains(f)).cloned().collect()
            }
            (None, Err(_)) => Vec::new(),
        };
        Ok(Ia3Config { target_modules, target_regex: false, feedforward_modules, feedforward_regex: false })
    }

    /// A fresh adapter for `model` as these options describe.
    pub async fn init_adapter(&self, model: &Model) -> Result<Adapter> {
        self.check_method()?;
        let architecture = model.lm.config.architecture;
        Ok(match self.method {
            Method::Lora => {
                let lora = LoraAdapter::init(&model.lm, self.lora_config(architecture)?, self.seed).await?;
                Adapter::Lora(if self.dora { lora.with_dora(&model.lm)? } else { lora })
            }
            Method::PromptTuning => {
                Adapter::Prompt(PromptAdapter::init(&model.lm, &model.tokenizer, self.prompt_config()?, self.seed)?)
            }
            Method::SeqBn | Method::DoubleSeqBn => {
                Adapter::Bottleneck(BottleneckAdapter::init(&model.lm, self.bottleneck_config()?, self.seed)?)
            }
            Method::Ia3 => Adapter::Ia3(Ia3Adapter::init(&model.lm, self.ia3_config(architecture)?)?),
        })
    }
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

    #[test]
    fn an_option_of_another_method_names_the_option_and_its_methods() {
        let cases = [
            (r#"{"method": "prompt-tuning", "dora": true}"#, ["\"dora\"", "\"lora\"", "prompt-tuning"]),
            (r#"{"method": "ia3", "nonLinearity": "relu"}"#, ["\"nonLinearity\"", "seq-bn", "ia3"]),
            (r#"{"adapterName": "x"}"#, ["\"adapterName\"", "double-seq-bn", "\"lora\""]),
            (r#"{"method": "seq-bn", "feedforwardModules": ["down_proj"]}"#, ["feedforwardModules", "ia3", "seq-bn"]),
        ];
        for (json, words) in cases {
            let e = from_json::<TrainingOptions>(json, "config").unwrap().train_config().unwrap_err();
            assert_eq!(e.code, crate::error::ErrorCode::InvalidOptions, "{e}");
            for word in words {
                assert!(e.message.contains(word), "{json}: \"{word}\" not in: {e}");
            }
        }
        let bad_init = TrainingOptions { method: Method::SeqBn, init: Some("xavier".into()), ..DEFAULTS };
        let e = bad_init.bottleneck_config().unwrap_err();
        assert!(e.message.contains("xavier") && e.message.contains("mam_adapter"), "{e}");
        let bad_act = TrainingOptions { method: Method::SeqBn, non_linearity: Some("swishy".into()), ..DEFAULTS };
        assert!(bad_act.bottleneck_config().unwrap_err().message.contains("swishy"));
        let bad_factor = TrainingOptions { method: Method::DoubleSeqBn, reduction_factor: 0.0, ..DEFAULTS };
        assert!(bad_factor.bottleneck_config().unwrap_err().message.contains("reduction factor"));
    }

    #[test]
    fn bottleneck_and_ia3_configs_follow_adapterhub_and_peft_defaults() {
        let seq = TrainingOptions { method: Method::SeqBn, ..DEFAULTS }.bottleneck_config().unwrap();
        assert_eq!((seq.non_linearity.as_str(), seq.mh_adapter, seq.name.as_str()), ("relu", false, "adapter"));
        let double = TrainingOptions {
            method: Method::DoubleSeqBn,
            init: Some("mam_adapter".into()),
            adapter_name: Some("houlsby".into()),
            ..DEFAULTS
        }
        .bottleneck_config()
        .unwrap();
        assert_eq!((double.non_linearity.as_str(), double.mh_adapter), ("swish", true));
        assert_eq!((double.init_weights, double.name.as_str()), (BottleneckInit::MamAdapter, "houlsby"));
        let ia3 = TrainingOptions { method: Method::Ia3, ..DEFAULTS };
        assert_eq!(ia3.ia3_config(Architecture::Llama).unwrap(), Ia3Config::for_model_type("llama").unwrap());
        let some = TrainingOptions { targets: Some(vec!["q_proj".into(), "down_proj".into()]), ..ia3 };
        let config = some.ia3_config(Architecture::Llama).unwrap();
        assert_eq!((config.target_modules.len(), config.feedforward_modules), (2, vec!["down_proj".to_owned()]));
    }
}
