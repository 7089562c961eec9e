//! How much GPU memory a training run needs, from the model's real layer shapes. An estimate to
//! warn before a run that cannot fit, not a measurement (`webtune bench` measures peaks).
//!
//! `total = weights + adapter + gradients + optimizer + activations + logits` bytes, where
//!
//! - `weights = parameters · weight_bytes`: every base weight at its stored width (2 under f16
//!   storage, 4 under f32: `LoadReport::bytes_per_weight`); tied embeddings count once. Not
//!   counted: under f16 storage a training step also holds the f32 casts autodiff keeps for the
//!   backward pass (see `model::layers`).
//! - `adapter = gradients = 4 · trainable`, `optimizer = 8 · trainable` (AdamW's two moments): f32.
//! - `activations = 4 · B · T · (layers · per_layer + Σ_adapted (r + in·[dropout]) + 2h)`: what
//!   autodiff keeps for the backward pass of one micro-batch of `B` rows of `T` tokens (virtual
//!   tokens included), with `per_layer = 8h + 5q + 4kv + 2q·[kv < q] + 4i + 3·heads·T` floats per
//!   token: the two norms' inputs, scaled and normalised values and the two residual sums (8h);
//!   the queries, roped queries, their rotated half, the attention output and its merged heads
//!   (5q); keys, roped keys, their rotated half and values (4kv), repeated to every query head
//!   under grouped-query attention (2q); the MLP's gate, activation, up projection and product
//!   (4i); the scaled, masked and softmaxed attention scores (3·heads·T). Here `h` is the hidden
//!   size, `q = heads · head_dim`, `kv = kv_heads · head_dim` (`head_dim` from the config, which
//!   need not be `h / heads`), `i` the intermediate size; each adapted layer adds `x·Aᵀ` (r) and,
//!   with dropout, its masked input (in); `2h` are the embeddings and the final norm. GPT-2 keeps
//!   a little less (no RoPE) and is counted the same.
//! - `logits = 4 · S · vocab · 3`: the logits, log-probabilities and their gradient of the `S`
//!   supervised positions of the largest micro-batch (`train::loss_sum` sends only those rows
//!   through the LM head).
//!
//! `largest_buffer` is the biggest single tensor, which must fit the device's
//! `maxStorageBufferBindingSize`: `max(vocab·h·weight_bytes, in·out·weight_bytes of the largest
//! linear layer, 4·S·vocab, 4·B·heads·T²)`.

use serde::Serialize;

use crate::model::ModelConfig;

/// Bytes of an f32, the width of everything but the stored base weights.
const F32: u64 = 4;

/// The shapes one training step works on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Workload {
    /// Rows per micro-batch (`B`).
    pub batch: usize,
    /// Tokens per row, virtual tokens included (`T`).
    pub tokens: usize,
    /// Supervised positions of the largest micro-batch (`S`): the rows the LM head sees.
    pub supervised: usize,
}

/// One adapted linear layer, as the estimate needs it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdaptedShape {
    pub in_features: usize,
    pub rank: usize,
}

/// Bytes, by what holds them (see the module documentation for each formula).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryEstimate {
    /// Bytes per stored base weight the estimate assumed.
    pub weight_bytes: u64,
    pub weights: u64,
    pub adapter: u64,
    pub gradients: u64,
    pub optimizer: u64,
    pub activations: u64,
    pub logits: u64,
    pub total: u64,
    pub largest_buffer: u64,
}

/// The base model's sizes the estimate reads.
#[derive(Clone, Copy, Debug)]
pub struct BaseModel<'a> {
    pub config: &'a ModelConfig,
    /// All weights (embeddings once when tied).
    pub parameters: usize,
    /// `in · out` of its largest linear layer.
    pub largest_linear: usize,
    /// Bytes per stored weight.
    pub weight_bytes: u64,
}

/// The estimate for training `trainable` values (LoRA on `adapted`, with or without dropout) of
/// an adapter on `base` with `work`.
pub fn estimate(
    base: BaseModel,
    trainable: usize,
    adapted: &[AdaptedShape],
    dropout: bool,
    work: Workload,
) -> MemoryEstimate {
    let (config, weight_bytes) = (base.config, base.weight_bytes);
    let n = |x: usize| x as u64;
    let (h, i, heads) = (n(config.hidden_size), n(config.intermediate_size), n(config.num_heads));
    let q = heads * n(config.head_dim);
    let kv = n(config.num_kv_heads) * n(config.head_dim);
    let (batch, tokens, supervised) = (n(work.batch), n(work.tokens), n(work.supervised));
    let repeated_kv = if kv < q { 2 * q } else { 0 };
    let per_layer = 8 * h + 5 * q + 4 * kv + repeated_kv + 4 * i + 3 * heads * tokens;
    let lora: u64 = adapted.iter().map(|a| n(a.rank) + if dropout { n(a.in_features) } else { 0 }).sum();
    let per_token = n(config.num_layers) * per_layer + lora + 2 * h;
    let vocab = n(config.vocab_size);

    let weights = n(base.parameters) * weight_bytes;
    let adapter = F32 * n(trainable);
    let optimizer = 2 * adapter;
    let activations = F32 * batch * tokens * per_token;
    let logits = F32 * supervised * vocab * 3;
    let largest_buffer = [
        vocab * h * weight_bytes,
        n(base.largest_linear) * weight_bytes,
        F32 * supervised * vocab,
        F32 * batch * heads * tokens * tokens,
    ]
    .into_iter()
    .max()
    .unwrap_or(0);
    MemoryEstimate {
        weight_bytes,
        weights,
        adapter,
        gradients: adapter,
        optimizer,
        activations,
        logits,
        total: weights + 2 * adapter + optimizer + activations + logits,
        largest_buffer,
    }
}

/// What an adapted module other than a plain LoRA layer keeps for the backward pass, in f32
/// values: per token of a micro-batch, and once per step. [`estimate`] counts LoRA's rank-`r`
/// intermediates; [`with_method_terms`] adds these:
///
/// - DoRA: the rescaled layer's output (`out` per token) and `W + s·BA`, materialised for its row
///   norms (`in · out` per step).
/// - IA3: the vector's operand, the layer's output (`out`) or, for feed-forward layers, its input
///   (`in`) per token.
/// - Bottleneck adapter: its input, the down projection, the activation and the up projection
///   (`2h + 2b` per token).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MethodTerm {
    pub per_token: usize,
    pub per_step: usize,
}

/// `estimate` plus the activations of `terms` for `work` (bytes added to `activations` and `total`).
pub fn with_method_terms(mut memory: MemoryEstimate, terms: &[MethodTerm], work: Workload) -> MemoryEstimate {
    let per_token: u64 = terms.iter().map(|t| t.per_token as u64).sum();
    let per_step: u64 = terms.iter().map(|t| t.per_step as u64).sum();
    let extra = F32 * (work.batch as u64 * work.tokens as u64 * per_token + per_step);
    memory.activations += extra;
    memory.total += extra;
    memory
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_formula_reads_head_dim_gqa_and_the_weight_width() {
        // Two query heads of width 6 (not hidden / heads = 4) share one key/value head.
        let config = ModelConfig::from_json(
            r#"{"model_type": "llama", "vocab_size": 100, "hidden_size": 8, "intermediate_size": 16,
                "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 6,
                "max_position_embeddings": 32, "tie_word_embeddings": true}"#,
        )
        .unwrap();
        let base = BaseModel { config: &config, parameters: 1000, largest_linear: 192, weight_bytes: 2 };
        let work = Workload { batch: 2, tokens: 5, supervised: 3 };
        let m = estimate(base, 100, &[AdaptedShape { in_features: 8, rank: 4 }], true, work);
        // per layer and token: 8·8 + 5·12 + 4·6 + 2·12 (repeated kv) + 4·16 + 3·2·5 = 266;
        // per token: 2·266 + (4 + 8) + 2·8 = 560.
        assert_eq!(m.activations, 4 * 2 * 5 * 560);
        assert_eq!((m.weights, m.adapter, m.gradients, m.optimizer), (2000, 400, 400, 800));
        assert_eq!(m.logits, 4 * 3 * 100 * 3);
        assert_eq!(m.total, 2000 + 400 + 400 + 800 + 22_400 + 3600);
        assert_eq!(m.largest_buffer, 100 * 8 * 2, "the embedding table at 2 bytes a weight");
        let f32_weights = estimate(BaseModel { weight_bytes: 4, ..base }, 100, &[], false, work);
        assert_eq!(f32_weights.weights, 4000);
    }

    #[test]
    fn method_terms_add_per_token_and_per_step_activations() {
        let config = ModelConfig::from_json(
            r#"{"model_type": "llama", "vocab_size": 100, "hidden_size": 8, "intermediate_size": 16,
                "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
                "max_position_embeddings": 32, "tie_word_embeddings": true}"#,
        )
        .unwrap();
        let base = BaseModel { config: &config, parameters: 1000, largest_linear: 128, weight_bytes: 4 };
        let work = Workload { batch: 2, tokens: 5, supervised: 3 };
        let plain = estimate(base, 100, &[], false, work);
        let terms = [MethodTerm { per_token: 3, per_step: 64 }, MethodTerm { per_token: 1, per_step: 0 }];
        let with = with_method_terms(plain.clone(), &terms, work);
        assert_eq!(with.activations - plain.activations, 4 * (2 * 5 * 4 + 64));
        assert_eq!(with.total - plain.total, with.activations - plain.activations);
    }
}
