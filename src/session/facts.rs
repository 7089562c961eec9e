//! What a run will train and need, known before it starts: the trainable parameter count, the
//! adapted layers and a memory estimate ([`memory`](super::memory)). The page shows them while the
//! user picks settings (`WebModel.runFacts`) and the trainer's report repeats them for the data
//! actually loaded.

use serde::Serialize;

use super::memory::{AdaptedShape, BaseModel, MemoryEstimate, MethodTerm, Storage, Training, Workload, estimate};
use crate::data::{Example, IGNORE_INDEX};
use crate::error::Result;
use crate::model::{CausalLm, LinearShape, ModelShape};
use crate::options::{Method, Recompute, TrainingOptions};
use crate::peft::Adapter;
use crate::peft::bottleneck::placements;

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunFacts {
    pub trainable_parameters: usize,
    /// The adapted modules, in model order (empty for prompt tuning).
    pub layers: Vec<AdaptedLayer>,
    /// Virtual tokens in front of every sequence (prompt tuning; 0 for LoRA).
    pub virtual_tokens: usize,
    pub memory: MemoryEstimate,
}

/// One adapted module: a linear layer with LoRA, DoRA or an IA3 vector, or a bottleneck adapter.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdaptedLayer {
    /// The HF module path (`model.layers.0.self_attn.q_proj`); for a bottleneck adapter its
    /// AdapterHub key prefix, which names the placement
    /// (`model.layers.0.output_adapters.adapters.adapter`).
    pub path: String,
    /// `lora`, `dora`, `ia3` (scales the output), `ia3-feedforward` (scales the input) or `bottleneck`.
    pub kind: &'static str,
    pub in_features: usize,
    pub out_features: usize,
    /// The LoRA rank or the bottleneck width; 0 for IA3.
    pub rank: usize,
    /// Trainable values in this module (LoRA's A and B, DoRA's magnitude, the IA3 vector, the
    /// bottleneck's weights and biases).
    pub parameters: usize,
}

impl AdaptedLayer {
    fn lora(linear: &LinearShape, rank: usize, dora: bool) -> Self {
        let (i, o) = (linear.in_features, linear.out_features);
        let parameters = rank * (i + o) + if dora { o } else { 0 };
        let kind = if dora { "dora" } else { "lora" };
        AdaptedLayer { path: linear.path.clone(), kind, in_features: i, out_features: o, rank, parameters }
    }

    fn ia3(linear: &LinearShape, feedforward: bool) -> Self {
        let (i, o) = (linear.in_features, linear.out_features);
        let (kind, parameters) = if feedforward { ("ia3-feedforward", i) } else { ("ia3", o) };
        AdaptedLayer { path: linear.path.clone(), kind, in_features: i, out_features: o, rank: 0, parameters }
    }

    fn bottleneck(key: &str, hidden: usize, width: usize) -> Self {
        AdaptedLayer {
            path: key.to_owned(),
            kind: "bottleneck",
            in_features: hidden,
            out_features: hidden,
            rank: width,
            parameters: 2 * hidden * width + width + hidden,
        }
    }

    /// What it keeps for the backward pass beyond LoRA's intermediates ([`MethodTerm`]).
    fn method_term(&self) -> MethodTerm {
        let (i, o) = (self.in_features, self.out_features);
        let (per_token, per_step) = match self.kind {
            "dora" => (o, i * o),
            "ia3" => (o, 0),
            "ia3-feedforward" => (i, 0),
            "bottleneck" => (2 * i + 2 * self.rank, 0),
            _ => (0, 0),
        };
        MethodTerm { per_token, per_step }
    }
}

/// The tensor a linear layer reads, named by the first layer reading it: q/k/v read the attention
/// block's normalised input, gate/up the MLP's.
fn input_of(path: &str) -> String {
    let (parent, name) = path.rsplit_once('.').unwrap_or(("", path));
    match name {
        "k_proj" | "v_proj" => format!("{parent}.q_proj"),
        "up_proj" => format!("{parent}.gate_proj"),
        _ => path.to_owned(),
    }
}

impl RunFacts {
    /// The facts of training with `options` before any data is loaded: the workload is the
    /// largest the options allow (`batchSize` rows of `maxLen` tokens, every token supervised).
    /// `storage` says how the base sits on the device ([`Storage::of`] a loaded model); `model` may
    /// be a loaded model's shape or one from a config.json alone.
    pub fn planned(model: &ModelShape, storage: Storage, options: &TrainingOptions) -> Result<RunFacts> {
        let config = &model.config;
        let (layers, virtual_tokens, dropout) = match options.method {
            Method::Lora => {
                let lora = options.lora_config(config.architecture)?;
                let layers = lora
                    .resolve(model)?
                    .into_iter()
                    .map(|(linear, rank, _)| AdaptedLayer::lora(linear, rank, options.dora))
                    .collect();
                (layers, 0, lora.dropout > 0.0)
            }
            Method::PromptTuning => (Vec::new(), options.prompt_config()?.num_virtual_tokens, false),
            Method::Ia3 => {
                let ia3 = options.ia3_config(config.architecture)?;
                let layers =
                    ia3.resolve(model)?.into_iter().map(|(linear, ff)| AdaptedLayer::ia3(linear, ff)).collect();
                (layers, 0, false)
            }
            Method::SeqBn | Method::DoubleSeqBn => {
                let bottleneck = options.bottleneck_config()?;
                let hidden = config.hidden_size;
                let mut layers = Vec::new();
                for (layer, _, key) in placements(model, &bottleneck)? {
                    layers.push(AdaptedLayer::bottleneck(
                        &key,
                        hidden,
                        bottleneck.reduction_factor.bottleneck(layer, hidden)?,
                    ));
                }
                (layers, 0, false)
            }
        };
        let len = options.max_len.min(config.max_positions);
        let work =
            Workload { batch: options.batch_size, tokens: len + virtual_tokens, supervised: options.batch_size * len };
        let trainable = virtual_tokens * config.hidden_size + layers.iter().map(|l| l.parameters).sum::<usize>();
        let base = BaseModel::of(model, storage);
        Ok(Self::new(base, trainable, layers, virtual_tokens, dropout, work, options.recompute))
    }

    /// The facts of training `adapter` on `examples` in micro-batches of `batch_size`: the
    /// workload is the longest example and the `batch_size` most supervised ones.
    pub fn of_run(
        lm: &CausalLm,
        adapter: &Adapter,
        examples: &[Example],
        batch_size: usize,
        recompute: Recompute,
    ) -> RunFacts {
        let (layers, virtual_tokens, dropout) = match adapter {
            Adapter::Lora(lora) => {
                let layers = lora
                    .modules
                    .iter()
                    .map(|m| AdaptedLayer::lora(&lm.shape().linears[m.slot], m.rank(), m.magnitude.is_some()))
                    .collect();
                (layers, 0, lora.config.dropout > 0.0)
            }
            Adapter::Prompt(prompt) => (Vec::new(), prompt.len(), false),
            Adapter::Ia3(ia3) => {
                let layers =
                    ia3.modules.iter().map(|m| AdaptedLayer::ia3(&lm.shape().linears[m.slot], m.feedforward)).collect();
                (layers, 0, false)
            }
            Adapter::Bottleneck(b) => {
                let layers =
                    b.modules.iter().map(|m| AdaptedLayer::bottleneck(&m.key, b.hidden_size, m.bottleneck())).collect();
                (layers, 0, false)
            }
        };
        let batch = batch_size.min(examples.len()).max(1);
        let mut supervised: Vec<usize> =
            examples.iter().map(|e| e.labels.iter().filter(|&&l| l != IGNORE_INDEX).count()).collect();
        supervised.sort_unstable_by(|a, b| b.cmp(a));
        let longest = examples.iter().map(|e| e.input_ids.len()).max().unwrap_or(0);
        let work =
            Workload { batch, tokens: longest + virtual_tokens, supervised: supervised.iter().take(batch).sum() };
        let base = BaseModel::of(lm.shape(), Storage::of(lm));
        Self::new(base, adapter.trainable_parameters(), layers, virtual_tokens, dropout, work, recompute)
    }

    fn new(
        base: BaseModel,
        trainable: usize,
        layers: Vec<AdaptedLayer>,
        virtual_tokens: usize,
        dropout: bool,
        work: Workload,
        recompute: Recompute,
    ) -> Self {
        let mut inputs = std::collections::BTreeSet::new();
        let adapted: Vec<AdaptedShape> = layers
            .iter()
            .filter(|l| matches!(l.kind, "lora" | "dora"))
            .map(|l| AdaptedShape {
                in_features: l.in_features,
                rank: l.rank,
                shared_input: !inputs.insert(input_of(&l.path)),
            })
            .collect();
        let terms: Vec<MethodTerm> = layers.iter().map(AdaptedLayer::method_term).collect();
        let run = Training { trainable, adapted: &adapted, terms: &terms, dropout, work, recompute };
        let memory = estimate(base, run);
        RunFacts { trainable_parameters: trainable, layers, virtual_tokens, memory }
    }
}
