//! Every user-facing training option in one place, with its default. The CLI maps its flags onto
//! this struct and the JS API passes it as a plain object (camelCase keys), so both mean the same
//! thing by each name.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::data::DataOptions;
use crate::err;
use crate::error::Result;
use crate::model::{Architecture, Model};
use crate::peft::{Adapter, LoraAdapter, LoraConfig, LoraInit, PromptAdapter, PromptConfig, PromptInit};
use crate::train::{AdamWConfig, EarlyStopping, Schedule, TrainConfig};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    Lora,
    PromptTuning,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct TrainingOptions {
    pub method: Method,
    /// LoRA: `default`, `gaussian`, `pissa`, `pissa_niter_K`; prompt tuning: `random`, `text`,
    /// `sample-vocab`. `None` picks `default` / `random` (or `text` when `init_text` is set).
    pub init: Option<String>,
    pub init_text: Option<String>,
    pub r: usize,
    pub alpha: f64,
    pub dropout: f64,
    /// Module-name suffixes; `None` = PEFT's defaults for the architecture.
    pub targets: Option<Vec<String>>,
    pub rslora: bool,
    pub rank_pattern: BTreeMap<String, usize>,
    pub alpha_pattern: BTreeMap<String, f64>,
    pub virtual_tokens: usize,
    /// `None` = 2e-4 for LoRA, 3e-2 for prompt tuning.
    pub lr: Option<f64>,
    pub weight_decay: f64,
    pub schedule: Schedule,
    pub warmup_steps: usize,
    pub batch_size: usize,
    pub grad_accum: usize,
    /// Global gradient-norm clip; `None` or 0 disables.
    pub clip: Option<f64>,
    pub steps: Option<usize>,
    pub epochs: usize,
    pub max_len: usize,
    pub eval_every: Option<usize>,
    pub early_stopping_patience: Option<usize>,
    pub early_stopping_threshold: f64,
    pub shuffle: bool,
    pub seed: u64,
    /// Jinja template for instruction/input/output rows.
    pub template: Option<String>,
    pub skip_bad_rows: bool,
    /// Fraction of the training rows held out for evaluation when no eval file is given.
    pub eval_split: f64,
}

impl Default for TrainingOptions {
    fn default() -> Self {
        TrainingOptions {
            method: Method::Lora,
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
            lr: None,
            weight_decay: 0.0,
            schedule: Schedule::Linear,
            warmup_steps: 0,
            batch_size: 4,
            grad_accum: 1,
            clip: Some(1.0),
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
        }
    }
}

/// PEFT's default LoRA targets per architecture (`TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING`).
pub fn default_targets(architecture: Architecture) -> Vec<String> {
    let names: &[&str] = match architecture {
        Architecture::Llama | Architecture::Qwen2 | Architecture::Qwen3 | Architecture::Gemma3 => &["q_proj", "v_proj"],
        Architecture::Gpt2 => &["c_attn"],
    };
    names.iter().map(|s| s.to_string()).collect()
}

impl TrainingOptions {
    pub fn data_options(&self) -> DataOptions {
        DataOptions { max_len: self.max_len, template: self.template.clone(), skip_bad_rows: self.skip_bad_rows }
    }

    pub fn learning_rate(&self) -> f64 {
        self.lr.unwrap_or(match self.method {
            Method::Lora => 2e-4,
            Method::PromptTuning => 3e-2,
        })
    }

    pub fn train_config(&self) -> Result<TrainConfig> {
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
            clip: self.clip.filter(|&c| c > 0.0),
            max_steps: self.steps,
            epochs: self.epochs,
            eval_every: self.eval_every,
            early_stopping: self
                .early_stopping_patience
                .map(|patience| EarlyStopping { patience, threshold: self.early_stopping_threshold }),
            shuffle: self.shuffle,
            seed: self.seed,
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

    /// A fresh adapter for `model` as these options describe.
    pub async fn init_adapter(&self, model: &Model) -> Result<Adapter> {
        Ok(match self.method {
            Method::Lora => Adapter::Lora(
                LoraAdapter::init(&model.lm, self.lora_config(model.lm.config.architecture)?, self.seed).await?,
            ),
            Method::PromptTuning => {
                Adapter::Prompt(PromptAdapter::init(&model.lm, &model.tokenizer, self.prompt_config()?, self.seed)?)
            }
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

impl Serialize for Schedule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Schedule::parse(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("schedule \"{name}\" is not constant, linear or cosine")))
    }
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
