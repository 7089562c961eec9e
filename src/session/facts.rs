//! What a run will train and need, known before it starts: the trainable parameter count, the
//! adapted layers and a memory estimate ([`memory`](super::memory)). The page shows them while the
//! user picks settings (`WebModel.runFacts`) and the trainer's report repeats them for the data
//! actually loaded.

use serde::Serialize;

use super::memory::{AdaptedShape, BaseModel, MemoryEstimate, Workload, estimate};
use crate::data::{Example, IGNORE_INDEX};
use crate::error::Result;
use crate::model::CausalLm;
use crate::options::{Method, TrainingOptions};
use crate::peft::Adapter;

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunFacts {
    pub trainable_parameters: usize,
    /// The adapted linear layers, in model order (empty for prompt tuning).
    pub layers: Vec<AdaptedLayer>,
    /// Virtual tokens in front of every sequence (prompt tuning; 0 for LoRA).
    pub virtual_tokens: usize,
    pub memory: MemoryEstimate,
}

/// One linear layer a LoRA adapts.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdaptedLayer {
    /// The HF module path (`model.layers.0.self_attn.q_proj`).
    pub path: String,
    pub in_features: usize,
    pub out_features: usize,
    pub rank: usize,
}

impl RunFacts {
    /// The facts of training with `options` before any data is loaded: the workload is the
    /// largest the options allow (`batchSize` rows of `maxLen` tokens, every token supervised).
    pub fn planned(lm: &CausalLm, options: &TrainingOptions) -> Result<RunFacts> {
        let (layers, virtual_tokens, dropout) = match options.method {
            Method::Lora => {
                let config = options.lora_config(lm.config.architecture)?;
                let layers = config
                    .resolve(lm)?
                    .into_iter()
                    .map(|(linear, rank, _)| AdaptedLayer {
                        path: linear.path.clone(),
                        in_features: linear.in_features,
                        out_features: linear.out_features,
                        rank,
                    })
                    .collect();
                (layers, 0, config.dropout > 0.0)
            }
            Method::PromptTuning => (Vec::new(), options.prompt_config()?.num_virtual_tokens, false),
        };
        let len = options.max_len.min(lm.config.max_positions);
        let work =
            Workload { batch: options.batch_size, tokens: len + virtual_tokens, supervised: options.batch_size * len };
        let trainable = virtual_tokens * lm.config.hidden_size
            + layers.iter().map(|l| l.rank * (l.in_features + l.out_features)).sum::<usize>();
        Ok(Self::new(lm, trainable, layers, virtual_tokens, dropout, work))
    }

    /// The facts of training `adapter` on `examples` in micro-batches of `batch_size`: the
    /// workload is the longest example and the `batch_size` most supervised ones.
    pub fn of_run(lm: &CausalLm, adapter: &Adapter, examples: &[Example], batch_size: usize) -> RunFacts {
        let (layers, virtual_tokens, dropout) = match adapter {
            Adapter::Lora(lora) => {
                let layers = lora
                    .modules
                    .iter()
                    .map(|m| {
                        let linear = &lm.linears()[m.slot];
                        AdaptedLayer {
                            path: m.path.clone(),
                            in_features: linear.in_features,
                            out_features: linear.out_features,
                            rank: m.rank(),
                        }
                    })
                    .collect();
                (layers, 0, lora.config.dropout > 0.0)
            }
            Adapter::Prompt(prompt) => (Vec::new(), prompt.len(), false),
            Adapter::Ia3(_) | Adapter::Bottleneck(_) => (Vec::new(), 0, false),
        };
        let batch = batch_size.min(examples.len()).max(1);
        let mut supervised: Vec<usize> =
            examples.iter().map(|e| e.labels.iter().filter(|&&l| l != IGNORE_INDEX).count()).collect();
        supervised.sort_unstable_by(|a, b| b.cmp(a));
        let longest = examples.iter().map(|e| e.input_ids.len()).max().unwrap_or(0);
        let work =
            Workload { batch, tokens: longest + virtual_tokens, supervised: supervised.iter().take(batch).sum() };
        Self::new(lm, adapter.trainable_parameters(), layers, virtual_tokens, dropout, work)
    }

    fn new(
        lm: &CausalLm,
        trainable: usize,
        layers: Vec<AdaptedLayer>,
        virtual_tokens: usize,
        dropout: bool,
        work: Workload,
    ) -> Self {
        let base = BaseModel {
            config: &lm.config,
            parameters: lm.parameter_count(),
            largest_linear: lm.linears().iter().map(|l| l.in_features * l.out_features).max().unwrap_or(0),
            weight_bytes: lm.report.bytes_per_weight(),
        };
        let adapted: Vec<AdaptedShape> =
            layers.iter().map(|l| AdaptedShape { in_features: l.in_features, rank: l.rank }).collect();
        let memory = estimate(base, trainable, &adapted, dropout, work);
        RunFacts { trainable_parameters: trainable, layers, virtual_tokens, memory }
    }
}
