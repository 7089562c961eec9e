//! `LlamaForCausalLM` and `Qwen2ForCausalLM` (Llama with q/k/v biases). Field paths mirror the
//! HF module tree (`model.layers.{i}.self_attn.q_proj`), so PEFT key names follow directly.

use burn::tensor::Tensor;

use crate::model::config::ModelConfig;
use crate::model::layers::{
    AttentionContext, Embedding, LayerHooks, Linear, LinearTable, RmsNorm, Rope, SubBlock, WeightLayout, activate,
    split_heads,
};
use crate::model::weights::{WeightSpec, Weights};

pub struct Llama {
    pub embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    /// `None` when tied to `embed_tokens`.
    lm_head: Option<Tensor<2>>,
}

struct DecoderLayer {
    input_layernorm: RmsNorm,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    post_attention_layernorm: RmsNorm,
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

/// The linear layers of one decoder layer: (name, in, out, bias).
fn layer_linears(c: &ModelConfig) -> [(&'static str, usize, usize, bool); 7] {
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
        spec.add("model.embed_tokens.weight", &[c.vocab_size, c.hidden_size]);
        for l in 0..c.num_layers {
            let p = format!("model.layers.{l}");
            RmsNorm::declare(&mut spec, &format!("{p}.input_layernorm"), c.hidden_size);
            RmsNorm::declare(&mut spec, &format!("{p}.post_attention_layernorm"), c.hidden_size);
            for (name, i, o, bias) in layer_linears(c) {
                LinearTable::declare(&mut spec, &format!("{p}.{name}"), i, o, WeightLayout::OutIn, bias);
            }
        }
        RmsNorm::declare(&mut spec, "model.norm", c.hidden_size);
        if !c.tie_word_embeddings {
            spec.add("lm_head.weight", &[c.vocab_size, c.hidden_size]);
        }
        spec
    }

    pub fn build(c: &ModelConfig, mut w: Weights, table: &mut LinearTable) -> Self {
        let embed_tokens = Embedding { weight: w.take("model.embed_tokens.weight") };
        let layers = (0..c.num_layers)
            .map(|l| {
                let p = format!("model.layers.{l}");
                let [q, k, v, o, gate, up, down] = layer_linears(c).map(|(name, i, out, bias)| {
                    table.build(&mut w, &format!("{p}.{name}"), i, out, WeightLayout::OutIn, bias)
                });
                DecoderLayer {
                    input_layernorm: RmsNorm::build(&mut w, &format!("{p}.input_layernorm"), c.norm_eps),
                    q_proj: q,
                    k_proj: k,
                    v_proj: v,
                    o_proj: o,
                    post_attention_layernorm: RmsNorm::build(
                        &mut w,
                        &format!("{p}.post_attention_layernorm"),
                        c.norm_eps,
                    ),
                    gate_proj: gate,
                    up_proj: up,
                    down_proj: down,
                }
            })
            .collect();
        let norm = RmsNorm::build(&mut w, "model.norm", c.norm_eps);
        let lm_head = (!c.tie_word_embeddings).then(|| w.take("lm_head.weight"));
        Llama { embed_tokens, layers, norm, lm_head }
    }

    /// `embeds [tokens, hidden]` → final hidden states `[tokens, hidden]` (after `model.norm`).
    pub fn hidden(
        &self,
        c: &ModelConfig,
        embeds: Tensor<2>,
        ctx: &mut AttentionContext,
        hooks: &dyn LayerHooks,
    ) -> Tensor<2> {
        let rope_config = c.rope.as_ref().expect("llama config has RoPE");
        let rope = Rope::new(rope_config, c.head_dim, ctx.past_len(), ctx.q_len, &embeds.device());
        let scale = 1.0 / (c.head_dim as f64).sqrt();
        let (b, len) = (ctx.batch, ctx.q_len);
        let mut x = embeds;
        for (l, layer) in self.layers.iter().enumerate() {
            let h = layer.input_layernorm.forward(x.clone());
            let q = rope.apply(split_heads(layer.q_proj.forward(h.clone(), hooks), b, len, c.num_heads));
            let k = rope.apply(split_heads(layer.k_proj.forward(h.clone(), hooks), b, len, c.num_kv_heads));
            let v = split_heads(layer.v_proj.forward(h, hooks), b, len, c.num_kv_heads);
            let attn = ctx.attend(l, q, k, v, scale);
            x = hooks.residual(l, SubBlock::Attention, x, layer.o_proj.forward(attn, hooks));
            let h = layer.post_attention_layernorm.forward(x.clone());
            let gated =
                activate(layer.gate_proj.forward(h.clone(), hooks), c.activation) * layer.up_proj.forward(h, hooks);
            x = hooks.residual(l, SubBlock::Mlp, x, layer.down_proj.forward(gated, hooks));
        }
        self.norm.forward(x)
    }

    /// The output projection `[vocab, hidden]` (the embedding table when tied).
    pub fn lm_head(&self) -> Tensor<2> {
        self.lm_head.clone().unwrap_or_else(|| self.embed_tokens.weight.clone())
    }
}
