//! Checkpoints: the adapter, the optimizer moments, the best adapter so far and the loop's
//! counters in one safetensors file. The data order is a function of the step number, so this is
//! all a resumed run needs to continue exactly as an uninterrupted one.
//!
//! A checkpoint also records what identifies its run ([`RunIdentity`]): named entries for the
//! model, the adapter, FNV-1a hashes of the examples, and every option that changes results.
//! Restoring compares entry by entry and names each one that differs; an entry only one side has
//! (a setting added or removed by another webtune version) is not compared, so adding an option
//! does not orphan saved runs.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Display;

use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::data::Example;
use crate::err;
use crate::error::Result;
use crate::model::CausalLm;
use crate::model::weights::{HostTensor, encode_safetensors, read_host_tensors};
use crate::peft::Adapter;
use crate::readback;
use crate::train::{Best, TrainConfig, Trainer};

const FORMAT: &str = "webtune-checkpoint-2";

#[derive(Serialize, Deserialize)]
struct State {
    format: String,
    /// Identifies the run: a checkpoint only resumes the same model, adapter, data and settings.
    run: RunIdentity,
    step: usize,
    adam_t: usize,
    best_loss: Option<f64>,
    evals_without_improvement: usize,
    stopped_early: bool,
}

/// What must match for a checkpoint to resume a run: named entries (option names as the JS keys)
/// with stable, human-readable values.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunIdentity(BTreeMap<String, String>);

impl RunIdentity {
    pub(super) fn of(
        lm: &CausalLm,
        adapter: &Adapter,
        train: &[Example],
        eval: &[Example],
        config: &TrainConfig,
    ) -> Self {
        let c = &lm.config;
        let mut id = RunIdentity::default();
        id.set(
            "model",
            format!(
                "{} with {} layers, hidden size {}, {} heads ({} key/value), vocabulary {}, {} parameters",
                c.architecture.name(),
                c.num_layers,
                c.hidden_size,
                c.num_heads,
                c.num_kv_heads,
                c.vocab_size,
                lm.parameter_count()
            ),
        );
        id.set("adapter", describe_adapter(adapter));
        id.set("trainExamples", describe_examples(train));
        id.set("evalExamples", describe_examples(eval));
        let optional = |v: Option<usize>| v.map_or("none".to_owned(), |n| n.to_string());
        id.set("lr", config.lr);
        id.set("weightDecay", config.optimizer.weight_decay);
        let o = &config.optimizer;
        id.set("adamW", format!("betas {} {}, eps {}", o.beta1, o.beta2, o.eps));
        id.set("schedule", format!("{:?}", config.schedule).to_lowercase());
        id.set("warmupSteps", config.warmup_steps);
        id.set("batchSize", config.batch_size);
        id.set("gradAccum", config.grad_accum);
        id.set("clip", config.clip.unwrap_or(0.0));
        id.set("steps", optional(config.max_steps));
        id.set("epochs", config.epochs);
        id.set("evalEvery", optional(config.eval_every));
        id.set("earlyStoppingPatience", optional(config.early_stopping.map(|e| e.patience)));
        id.set("earlyStoppingThreshold", config.early_stopping.map_or(0.0, |e| e.threshold));
        id.set("shuffle", config.shuffle);
        id.set("seed", config.seed);
        id
    }

    pub fn set(&mut self, name: &str, value: impl Display) {
        self.0.insert(name.to_owned(), value.to_string());
    }

    /// Each entry both have and that differs, as `name: was …, now …`.
    fn differences(&self, now: &RunIdentity) -> Vec<String> {
        self.0
            .iter()
            .filter_map(|(name, was)| {
                let current = now.0.get(name).filter(|current| *current != was)?;
                Some(format!("{} (was {was}; now {current})", describe_entry(name)))
            })
            .collect()
    }
}

/// How a refusal names an entry: data and model in words, options by their key.
fn describe_entry(name: &str) -> String {
    match name {
        "model" => "the model differs".to_owned(),
        "adapter" => "the adapter differs (method, targets, rank, alpha, dropout or init)".to_owned(),
        "trainFile" => "the training data file differs".to_owned(),
        "evalFile" => "the eval data file differs".to_owned(),
        "trainExamples" => "the training examples differ (their file, or the options that shape them)".to_owned(),
        "evalExamples" => "the eval examples differ (their file, evalSplit, or the options that shape them)".to_owned(),
        option => format!("option {option} differs"),
    }
}

fn describe_adapter(adapter: &Adapter) -> String {
    let mut hash = Fnv1a::default();
    let params = adapter.params();
    for (key, tensor) in &params {
        hash.write(key.as_bytes());
        tensor.dims().iter().for_each(|d| hash.write(&(*d as u64).to_le_bytes()));
    }
    if let Adapter::Lora(lora) = adapter {
        hash.write(&lora.config.dropout.to_le_bytes());
        for module in &lora.modules {
            hash.write(&module.scale.to_le_bytes());
            hash.write(&[u8::from(module.pissa_initial.is_some())]);
        }
    }
    format!("{}, {} tensors, fnv1a {:016x}", adapter.peft_type(), params.len(), hash.finish())
}

fn describe_examples(examples: &[Example]) -> String {
    let mut hash = Fnv1a::default();
    for example in examples {
        hash.write(&(example.input_ids.len() as u64).to_le_bytes());
        example.input_ids.iter().for_each(|id| hash.write(&id.to_le_bytes()));
        example.labels.iter().for_each(|label| hash.write(&label.to_le_bytes()));
    }
    format!("{} examples, fnv1a {:016x}", examples.len(), hash.finish())
}

/// A stable description of data bytes: their length and FNV-1a hash.
pub fn describe_bytes(bytes: &[u8]) -> String {
    let mut hash = Fnv1a::default();
    hash.write(bytes);
    format!("{} bytes, fnv1a {:016x}", bytes.len(), hash.finish())
}

/// 64-bit FNV-1a: stable across platforms and versions (unlike `std`'s hashers), and fast enough
/// for datasets of a few megabytes.
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ byte as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl Trainer {
    /// Adds an entry to what identifies this run in its checkpoints (the set-up records the data
    /// files and the options that shape the examples).
    pub fn identify(&mut self, name: &str, value: impl Display) {
        self.identity.set(name, value);
    }

    /// Serialises the training state (after the last completed step).
    pub async fn checkpoint(&self) -> Result<Vec<u8>> {
        let mut tensors = BTreeMap::new();
        let (m, v) = self.optimizer.moments();
        for (group, values) in [("m", m), ("v", v)] {
            for (i, t) in values.into_iter().enumerate() {
                let shape = t.dims().to_vec();
                tensors.insert(format!("{group}.{i}"), HostTensor { shape, data: readback::floats(t).await? });
            }
        }
        let params = self.optimizer.host_params().await?;
        let best = self.best.iter().flat_map(|b| b.params.iter().cloned());
        for (group, values) in [("param", params), ("best", best.collect())] {
            for (i, t) in values.into_iter().enumerate() {
                tensors.insert(format!("{group}.{i}"), t);
            }
        }
        let state = State {
            format: FORMAT.into(),
            run: self.identity.clone(),
            step: self.step,
            adam_t: self.optimizer.t,
            best_loss: self.best.as_ref().map(|b| b.loss),
            evals_without_improvement: self.evals_without_improvement,
            stopped_early: self.stopped_early,
        };
        let metadata: HashMap<String, String> =
            [("webtune".to_owned(), serde_json::to_string(&state).expect("state serialises"))].into();
        Ok(encode_safetensors(&tensors, Some(metadata)))
    }

    /// Restores a checkpoint written by [`Trainer::checkpoint`] for the same run.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<()> {
        let (_, metadata) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| err!(InvalidOptions, "the checkpoint is unreadable (truncated or corrupt): {e}"))?;
        let text = metadata
            .metadata()
            .as_ref()
            .and_then(|m| m.get("webtune"))
            .ok_or_else(|| err!(InvalidOptions, "this file is not a webtune checkpoint"))?;
        let format =
            serde_json::from_str::<serde_json::Value>(text).ok().and_then(|v| v["format"].as_str().map(str::to_owned));
        if format.as_deref() != Some(FORMAT) {
            return Err(err!(
                InvalidOptions,
                "checkpoint format {} is not supported (expected {FORMAT}): it was written by another webtune version; start the run again",
                format.unwrap_or_else(|| "(none)".to_owned())
            ));
        }
        let state: State = serde_json::from_str(text)
            .map_err(|e| err!(InvalidOptions, "the checkpoint's run state is unreadable: {e}"))?;
        let differences = state.run.differences(&self.identity);
        if !differences.is_empty() {
            return Err(err!(
                InvalidOptions,
                "the checkpoint belongs to a different run: {}; start a new run, or resume with what the checkpoint was made with",
                differences.join("; ")
            ));
        }
        let mut tensors = read_host_tensors("checkpoint", bytes)?;
        let device = self.lm.device().clone();
        let mut host_group = |name: &str, count: usize| -> Result<Vec<HostTensor>> {
            (0..count)
                .map(|i| {
                    let t = tensors
                        .remove(&format!("{name}.{i}"))
                        .ok_or_else(|| err!(InvalidOptions, "the checkpoint lacks {name}.{i}"))?;
                    if t.shape.len() != 2 {
                        return Err(err!(InvalidOptions, "checkpoint tensor {name}.{i} is not 2-D"));
                    }
                    Ok(t)
                })
                .collect()
        };
        let n = self.adapter.params().len();
        let (params, m, v) = (host_group("param", n)?, host_group("m", n)?, host_group("v", n)?);
        let best = match state.best_loss {
            Some(loss) => Some(Best { loss, params: host_group("best", n)? }),
            None => None,
        };
        let (params, m, v) = (to_device(params, &device), to_device(m, &device), to_device(v, &device));
        self.adapter = self.adapter.with_params(self.optimizer.set_params(params));
        self.prefetched = None;
        // The recordings read the parameters and moments where they were.
        self.graphs.clear();
        self.optimizer.set_moments(m, v);
        self.optimizer.t = state.adam_t;
        self.step = state.step;
        self.best = best;
        self.evals_without_improvement = state.evals_without_improvement;
        self.stopped_early = state.stopped_early;
        Ok(())
    }
}

/// 2-D host tensors (checked by the caller) on `device`.
pub(super) fn to_device(tensors: Vec<HostTensor>, device: &Device) -> Vec<Tensor<2>> {
    tensors.into_iter().map(|t| Tensor::from_data(TensorData::new(t.data, [t.shape[0], t.shape[1]]), device)).collect()
}
