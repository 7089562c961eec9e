//! What the options become: the data, training and adapter configurations, each checked, and
//! a fresh adapter of the chosen method.

use super::{DEFAULT_ADAPTER_NAME, Method, Recompute, TrainingOptions};
use crate::data::DataOptions;
use crate::err;
use crate::error::Result;
use crate::model::{Architecture, Model};
use crate::peft::{
    Adapter, BottleneckAdapter, BottleneckConfig, BottleneckInit, Ia3Adapter, Ia3Config, LoraAdapter, LoraConfig,
    LoraInit, PromptAdapter, PromptConfig, PromptInit, ReductionFactor, default_targets,
};
use crate::train::{AdamWConfig, EarlyStopping, TrainConfig};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::{DEFAULTS, from_json};

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
