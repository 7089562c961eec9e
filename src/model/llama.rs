//! `LlamaForCausalLM`, `Qwen2ForCausalLM` (Llama with q/k/v biases) and `Qwen3ForCausalLM`
//! (Llama with per-head RMSNorm of queries and keys before RoPE, transformers'
//! `Qwen3Attention`). Field paths mirror the HF module tree (`model.layers.{i}.self_attn.q_proj`),
//! so PEFT key names follow directly.

use burn::tensor::Tensor;

use crate::model::attention::{AttentionContext, AttentionSpec};
use crate::model::config::ModelConfig;
use crate::model::layers::{
    LayerHooks, Linear, LinearTable, RmsNorm, SubBlock, WeightLayout, gated_activation, pack_gate_up, take_gate_up,
};
use crate::model::table::Table;
use crate::model::weights::{WeightSpec, Weights};

pub struct Llama {
    embed_tokens: Table,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    /// The embedding table when tied.
    lm_head: Table,
}

struct DecoderLayer {
    input_layernorm: RmsNorm,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    /// Qwen3's `q_norm` / `k_norm` (weights `[head_dim]`).
    qk_norm: Option<(RmsNorm, RmsNorm)>,
    post_attention_layernorm: RmsNorm,
    gate_proj: Linear,
    up_proj: Linear,
    /// Both, packed (`layers::take_gate_up`), unless the checkpoint stores them at two widths.
    gate_up: Option<Linear>,
    down_proj: Linear,
}

/// The linear layers of one decoder layer: (name, in, out, bias). Queries are
/// `heads × head_dim` wide, which need not equal the hidden size (Qwen3-0.6B: 16 × 128 = 2048 ≠ 1024).
pub(super) fn layer_linears(c: &ModelConfig) -> [(&'static str, usize, usize, bool); 7] {
    let (h, q, kv, i) = (c.hidden_size, c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim, c.intermediate_size);
    [
        ("self_attn.q_proj", h, q, c.qkv_bias),
        ("self_attn.k_proj", h, kv, c.qkv_bias),
        ("self_attn.v_proj", h, kv, c.qkv_bias),
        ("self_attn.o_proj", q, h, c.o_bias),
        ("mlp.gate_proj", h, i, c.mlp_bias),
        ("mlp.up_proj", h, i, c.mlp_bias),
        ("mlp.down_proj", i, h, c.mlp_bias),
    ]
}

impl Llama {
    pub fn spec(c: &ModelConfig) -> WeightSpec {
        let mut spec = WeightSpec::default();
        spec.add_table("model.embed_tokens.weight", [c.vocab_size, c.hidden_size]);
        for l in 0..c.num_layers {
            let p = format!("model.layers.{l}");
            RmsNorm::declare(&mut spec, &format!("{p}.input_layernorm"), c.hidden_size);
            RmsNorm::declare(&mut spec, &format!("{p}.post_attention_layernorm"), c.hidden_size);
            if c.qk_norm {
                RmsNorm::declare(&mut spec, &format!("{p}.self_attn.q_norm"), c.head_dim);
                RmsNorm::declare(&mut spec, &format!("{p}.self_attn.k_norm"), c.head_dim);
            }
            for (name, i, o, bias) in layer_linears(c) {
                LinearTable::declare(&mut spec, &format!("{p}.{name}"), i, o, WeightLayout::OutIn, bias);
            }
            if !c.mlp_bias {
                pack_gate_up(&mut spec, &format!("{p}.mlp"));
            }
        }
        RmsNorm::declare(&mut spec, "model.norm", c.hidden_size);
        if !c.tie_word_embeddings {
            spec.add_table("lm_head.weight", [c.vocab_size, c.hidden_size]);
        }
        spec
    }

    pub fn build(c: &ModelConfig, w: &mut Weights, table: &mut LinearTable) -> Self {
        let embed_tokens = w.take_table("model.embed_tokens.weight");
        let layers = (0..c.num_layers)
            .map(|l| {
                let p = format!("model.layers.{l}");
                let [q, k, v, o, gate, up, down] = layer_linears(c).map(|(name, i, out, bias)| {
                    table.build(w, &format!("{p}.{name}"), i, out, WeightLayout::OutIn, bias)
                });
                let qk_norm = c.qk_norm.then(|| {
                    (
                        RmsNorm::build(w, &format!("{p}.self_attn.q_norm"), c.norm_eps),
                        RmsNorm::build(w, &format!("{p}.self_attn.k_norm"), c.norm_eps),
                    )
                });
                DecoderLayer {
                    input_layernorm: RmsNorm::build(w, &format!("{p}.input_layernorm"), c.norm_eps),
                    q_proj: q,
                    k_proj: k,
                    v_proj: v,
                    o_proj: o,
                    qk_norm,
                    post_attention_layernorm: RmsNorm::build(w, &format!("{p}.post_attention_layernorm"), c.norm_eps),
                    gate_proj: gate,
                    up_proj: up,
                    gate_up: take_gate_up(w, &format!("{p}.mlp"), c.hidden_size),
                    down_proj: down,
                }
            })
            .collect();
        let norm = RmsNorm::build(w, "model.norm", c.norm_eps);
        let lm_head = if c.tie_word_embeddings { embed_tokens.clone() } else { w.take_table("lm_head.weight") };
        Llama { embed_tokens, layers, norm, lm_head }
    }
}

impl super::Decoder for Llama {
    fn token_embeddings(&self) -> (&Table, Option<f32>) {
        (&self.embed_tokens, None)
    }

    fn layer(
        &self,
        c: &ModelConfig,
        l: usize,
        x: Tensor<2>,
        ctx: &mut AttentionContext,
        hooks: &dyn LayerHooks,
    ) -> Tensor<2> {
        let layer = &self.layers[l];
        let spec = AttentionSpec {
            heads: c.num_heads,
            kv_heads: c.num_kv_heads,
            head_dim: c.head_dim,
            scale: 1.0 / (c.head_dim as f64).sqrt(),
            window: None,
            rope: Some(c.rope.as_ref().expect("llama config has RoPE")),
        };
        let h = layer.input_layernorm.forward(x.clone());
        let mut q = layer.q_proj.forward(h.clone(), hooks);
        let mut k = layer.k_proj.forward(h.clone(), hooks);
        if let Some((q_norm, k_norm)) = &layer.qk_norm {
            (q, k) = (q_norm.forward_heads(q), k_norm.forward_heads(k));
        }
        let v = layer.v_proj.forward(h, hooks);
        let attn = ctx.attend(l, q, k, v, &spec);
        let x = hooks.residual(l, SubBlock::Attention, x, layer.o_proj.forward(attn, hooks));
        let h = layer.post_attention_layernorm.forward(x.clone());
        let gated = gated_activation(&layer.gate_proj, &layer.up_proj, layer.gate_up.as_ref(), h, c.activation, hooks);
        hooks.residual(l, SubBlock::Mlp, x, layer.down_proj.forward(gated, hooks))
    }

    fn final_norm(&self, x: Tensor<2>) -> Tensor<2> {
        self.norm.forward(x)
    }

    fn head(&self) -> &Table {
        &self.lm_head
    }
}
