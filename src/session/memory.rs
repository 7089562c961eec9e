//! How much GPU memory a training run needs, from the model's real layer shapes. An estimate to
//! warn before a run that cannot fit, not a measurement (`webtune bench` measures peaks).
//!
//! `total = weights + adapter + gradients + optimizer + activations + logits` bytes (recomputing
//! layers, see below, the larger of one layer's activations and the logits), where
//!
//! - `weights = parameters · weight_bytes`: every base weight at its stored width (2 under f16
//!   storage, 4 under f32: `LoadReport::bytes_per_weight`); tied embeddings count once. On the
//!   GPU the matmul reads an f16 weight as it is (`kernels::frozen_matmul`); the CPU backend's
//!   f32 casts are transient.
//! - `adapter = gradients = 4 · trainable`, `optimizer = 8 · trainable` (AdamW's two moments): f32.
//! - `activations = 4 · B · T · (layers · per_layer + Σ_adapted lora + 2h)`: what autodiff keeps
//!   for the backward pass of one micro-batch of `B` rows of `T` tokens (virtual tokens
//!   included), with `per_layer = norms + q + 2·kv' + 3·heads·T + mlp` floats per token: each
//!   RMSNorm's input (`norms`: 2h, Gemma 3 4h, plus `q + kv` for per-head q/k norms); the roped
//!   queries (q); keys and values as attention reads them (`kv' = q` under grouped-query
//!   attention, whose repeated heads are copies, else `kv`); the scaled and masked scores, their
//!   exponentials and the softmax (3·heads·T: eager attention's, which the fused kernel, where it
//!   runs, does not keep, so the estimate is then above the peak by that term); the gated MLP's
//!   gate and up projection, which the GLU kernel (`kernels::glu`) reads again (`mlp = 2i`);
//!   GPT-2's ungated GELU in composed ops keeps `5i` (as measured for composed GELUs on Gemma 3's
//!   shape). Each adapted layer adds `x·Aᵀ` (r) and its input:
//!   without dropout the input once for the layers that read the same tensor (q/k/v, gate/up:
//!   [`AdaptedShape::shared_input`]), with dropout the mask and the masked input (2·in) per
//!   layer. `2h` are the embeddings and the final norm. Here `h` is the hidden size, `q = heads ·
//!   head_dim`, `kv = kv_heads · head_dim` (`head_dim` from the config, which need not be `h /
//!   heads`), `i` the intermediate size. Measured with `webtune bench --recompute off` (the
//!   pool's bytes in use after a forward pass, `kept_for_backward_mb`, per layer added):
//!   SmolLM2-135M's shape keeps 12.4 MiB per layer at 4 × 128 tokens on lavapipe, where the
//!   attention kernel runs; this formula 20.7, of which eager attention's scores are 6.75. GPT-2
//!   (LayerNorm, no RoPE) is counted the same.
//! - Recomputing each decoder layer in the backward pass (`train::recompute`, the `recompute`
//!   option; `auto` turns it on above [`RECOMPUTE_ABOVE`] bytes of the activations above), the
//!   forward pass keeps only each layer's input (`4 · B · T · (layers · h + 2h)`), and the
//!   backward pass adds one layer's activations at a time (the sum above divided by the layers):
//!   `activations` is their sum, and `total` counts the larger of one layer's activations and the
//!   logits, which are never held together.
//! - `logits = 4 · (S · vocab + S · c + cast)` when kept, else `4 · (2 · S · c + cast)`: the
//!   loss's chunked cross-entropy (`kernels::cross_entropy_sum`) over the `S` supervised
//!   positions of the largest micro-batch (`train::loss_sum` sends only those rows through the
//!   LM head) works one chunk of `c` vocabulary ids at a time (`kernels::LossChunks`). It keeps all
//!   the logits for the backward pass when there are at most `KEEP_VALUES`, and the backward pass
//!   adds one chunk's gradient; otherwise the backward pass recomputes each chunk's logits beside
//!   their gradient. `cast = c · h` under f16 storage: the head's chunk cast to f32 for its
//!   product (0 under f32). A head stored in row blocks (larger than one binding) is the same: its
//!   blocks' log-sum-exps take the same chunks (`model::table::Table::target_log_probs`), none
//!   wider than a block. The bench's sampler does not see this top (it lasts one kernel), so the
//!   estimate is the only figure for it.
//!
//! `largest_buffer` is the biggest single tensor, which must fit the device's
//! `maxStorageBufferBindingSize`: `4 · max(in·out of the largest linear layer, B·heads·T², B·T·w)`:
//! the largest frozen weight at f32, eager attention's scores, and the widest activation
//! (`w` the largest in or out of a linear layer). Vocabulary tables and logits are not in it: tables larger than a binding are
//! stored as row blocks and the loss takes the logits in chunks that fit one (`model::table`).

use serde::Serialize;

use crate::kernels::LossChunks;
use crate::model::{Architecture, CausalLm, ModelConfig, ModelShape};
use crate::options::Recompute;

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
    /// Its input is the input of an adapted layer counted before it (k_proj after q_proj).
    pub shared_input: bool,
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
    /// The backward pass recomputes each decoder layer (then `activations` are each layer's
    /// input plus one layer's activations).
    pub recompute_layers: bool,
}

/// How the base model sits on the device, as the estimate needs it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Storage {
    /// Bytes per stored weight (2 under f16 storage, 4 under f32).
    pub weight_bytes: u64,
}

impl Storage {
    /// How `lm` was loaded.
    pub fn of(lm: &CausalLm) -> Self {
        Storage { weight_bytes: lm.report.bytes_per_weight() }
    }
}

/// The base model's sizes the estimate reads.
#[derive(Clone, Copy, Debug)]
pub struct BaseModel<'a> {
    pub config: &'a ModelConfig,
    /// All weights (embeddings once when tied).
    pub parameters: usize,
    /// `in · out` of its largest linear layer.
    pub largest_linear: usize,
    /// The largest `in` or `out` of a linear layer.
    pub widest: usize,
    /// Bytes per stored weight.
    pub weight_bytes: u64,
}

impl<'a> BaseModel<'a> {
    pub fn of(model: &'a ModelShape, storage: Storage) -> Self {
        BaseModel {
            config: &model.config,
            parameters: model.parameters,
            largest_linear: model.largest_linear(),
            widest: model.linears.iter().map(|l| l.in_features.max(l.out_features)).max().unwrap_or(0),
            weight_bytes: storage.weight_bytes,
        }
    }
}

/// Above this many bytes of activations kept for the backward pass, [`Recompute::Auto`]
/// recomputes each decoder layer instead.
pub const RECOMPUTE_ABOVE: u64 = 512 << 20;

/// What a run trains and on what: the adapter's size and shapes, and the workload.
#[derive(Clone, Copy, Debug)]
pub struct Training<'a> {
    /// Trainable values of the adapter.
    pub trainable: usize,
    /// Its LoRA / DoRA layers.
    pub adapted: &'a [AdaptedShape],
    /// What its other modules keep.
    pub terms: &'a [MethodTerm],
    /// LoRA dropout is on.
    pub dropout: bool,
    pub work: Workload,
    pub recompute: Recompute,
}

/// The estimate for a training run of `run` on `base`.
pub fn estimate(base: BaseModel, run: Training) -> MemoryEstimate {
    let (config, weight_bytes, work) = (base.config, base.weight_bytes, run.work);
    let n = |x: usize| x as u64;
    let (h, i, heads) = (n(config.hidden_size), n(config.intermediate_size), n(config.num_heads));
    let q = heads * n(config.head_dim);
    let kv = n(config.num_kv_heads) * n(config.head_dim);
    let (batch, tokens, supervised) = (n(work.batch), n(work.tokens), n(work.supervised));
    let norms = match config.architecture {
        Architecture::Gemma3 => 4 * h,
        _ => 2 * h,
    } + if config.qk_norm { q + kv } else { 0 };
    let mlp = match config.architecture {
        Architecture::Gpt2 => 5 * i,
        _ => 2 * i,
    };
    // Roped queries, keys and values as attention reads them (repeated under GQA), and three
    // score-sized tensors (scaled and masked scores, their exponentials, the softmax).
    let keys_values = if kv < q { 2 * q } else { 2 * kv };
    let per_layer = norms + q + keys_values + 3 * heads * tokens + mlp;
    let input = |a: &AdaptedShape| match (run.dropout, a.shared_input) {
        (true, _) => 2 * n(a.in_features),
        (false, false) => n(a.in_features),
        (false, true) => 0,
    };
    let lora: u64 = run.adapted.iter().map(|a| n(a.rank) + input(a)).sum();
    let method: u64 = run.terms.iter().map(|t| n(t.per_token)).sum();
    let per_step: u64 = run.terms.iter().map(|t| n(t.per_step)).sum();
    let layers = n(config.num_layers).max(1);
    let every_layer = layers * per_layer + lora + method;
    let kept_all = F32 * (batch * tokens * (every_layer + 2 * h) + per_step);
    let recompute_layers = match run.recompute {
        Recompute::On => true,
        Recompute::Off => false,
        Recompute::Auto => kept_all > RECOMPUTE_ABOVE,
    };
    let vocab = n(config.vocab_size);
    let loss = LossChunks::of(work.supervised, config.vocab_size, usize::MAX);
    let chunk = n(loss.chunk);
    let head_cast = if weight_bytes < F32 { chunk * h } else { 0 };
    let logits = if loss.keep_logits {
        F32 * (supervised * vocab + supervised * chunk + head_cast)
    } else {
        F32 * (2 * supervised * chunk + head_cast)
    };
    // Recomputing, the backward pass holds each layer's input and then either the loss's logits
    // or one layer's activations, never both.
    let (activations, held) = if recompute_layers {
        let inputs = F32 * batch * tokens * (layers * h + 2 * h);
        let one_layer = F32 * (batch * tokens * every_layer.div_ceil(layers) + per_step);
        (inputs + one_layer, inputs + one_layer.max(logits))
    } else {
        (kept_all, kept_all + logits)
    };

    let weights = n(base.parameters) * weight_bytes;
    let adapter = F32 * n(run.trainable);
    let optimizer = 2 * adapter;
    let largest_buffer = F32 * [n(base.largest_linear), batch * tokens * n(base.widest)].into_iter().max().unwrap_or(0);
    MemoryEstimate {
        weight_bytes,
        weights,
        adapter,
        gradients: adapter,
        optimizer,
        activations,
        logits,
        total: weights + 2 * adapter + optimizer + held,
        largest_buffer,
        recompute_layers,
    }
}

/// What an adapted module other than a plain LoRA layer keeps for the backward pass, in f32
/// values: per token of a micro-batch, and once per step. [`estimate`] counts LoRA's rank-`r`
/// intermediates and these:
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

#[cfg(test)]
mod tests {
    use super::*;

    fn run<'a>(adapted: &'a [AdaptedShape], terms: &'a [MethodTerm], dropout: bool) -> Training<'a> {
        let work = Workload { batch: 2, tokens: 5, supervised: 3 };
        Training { trainable: 100, adapted, terms, dropout, work, recompute: Recompute::Off }
    }

    #[test]
    fn the_formula_reads_head_dim_gqa_and_the_weight_width() {
        // Two query heads of width 6 (not hidden / heads = 4) share one key/value head.
        let config = ModelConfig::from_json(
            r#"{"model_type": "llama", "vocab_size": 100, "hidden_size": 8, "intermediate_size": 16,
                "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 6,
                "max_position_embeddings": 32, "tie_word_embeddings": true}"#,
        )
        .unwrap();
        let base = BaseModel { config: &config, parameters: 1000, largest_linear: 192, widest: 16, weight_bytes: 2 };
        let q = AdaptedShape { in_features: 8, rank: 4, shared_input: false };
        let m = estimate(base, run(&[q], &[], true));
        // per layer and token: 2·8 (norms) + 12 (q) + 2·12 (kv repeated to q) + 3·2·5 + 2·16 = 114;
        // per token: 2·114 + (4 + 2·8: rank, mask and masked input) + 2·8 = 264.
        assert_eq!(m.activations, 4 * 2 * 5 * 264);
        assert_eq!((m.weights, m.adapter, m.gradients, m.optimizer), (2000, 400, 400, 800));
        // 3 rows × 100 ids kept for the backward pass, one chunk's gradient (all 100 ids) and the
        // f16 head's chunk cast to f32 (100 × 8).
        assert_eq!(m.logits, 4 * (3 * 100 + 3 * 100 + 100 * 8));
        assert_eq!(m.total, 2000 + 400 + 400 + 800 + 10_560 + 5600);
        assert_eq!(
            m.largest_buffer,
            4 * 192,
            "the largest weight cast to f32 (over 4·2·5·16 activations, 4·2·2·25 scores)"
        );
        assert!(!m.recompute_layers, "a few KiB of activations are kept, not recomputed");
        let f32_weights = estimate(BaseModel { weight_bytes: 4, ..base }, run(&[], &[], false));
        assert_eq!(f32_weights.weights, 4000);
        // Without dropout, k_proj reads the tensor q_proj's LoRA already keeps.
        let k = AdaptedShape { shared_input: true, ..q };
        let shared = estimate(base, run(&[q, k], &[], false));
        assert_eq!(shared.activations - f32_weights.activations, 4 * 2 * 5 * (4 + 8 + 4));

        // Recomputing: each layer's input (2·8, and 2·8 for the embeddings and final norm) and one
        // layer's share: ceil((2·114 + 20) / 2) = 124; the total holds the inputs and the larger of
        // the logits (5600 bytes) and the layer's 4960, never both.
        let recomputed = estimate(base, Training { recompute: Recompute::On, ..run(&[q], &[], true) });
        assert!(recomputed.recompute_layers);
        let inputs = 4 * 2 * 5 * (2 * 8 + 2 * 8);
        assert_eq!(recomputed.activations, inputs + 4 * 2 * 5 * 124);
        assert_eq!(recomputed.total, 2000 + 400 + 400 + 800 + inputs + 5600);
    }

    #[test]
    fn method_terms_add_per_token_and_per_step_activations() {
        let config = ModelConfig::from_json(
            r#"{"model_type": "llama", "vocab_size": 100, "hidden_size": 8, "intermediate_size": 16,
                "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
                "max_position_embeddings": 32, "tie_word_embeddings": true}"#,
        )
        .unwrap();
        let base = BaseModel { config: &config, parameters: 1000, largest_linear: 128, widest: 16, weight_bytes: 4 };
        let plain = estimate(base, run(&[], &[], false));
        let terms = [MethodTerm { per_token: 3, per_step: 64 }, MethodTerm { per_token: 1, per_step: 0 }];
        let with = estimate(base, run(&[], &terms, false));
        assert_eq!(with.activations - plain.activations, 4 * (2 * 5 * 4 + 64));
        assert_eq!(with.total - plain.total, with.activations - plain.activations);
    }
}
