//! `Gemma3ForCausalLM` (`model_type: gemma3_text`), as transformers' `modeling_gemma3.py`
//! computes it:
//! - input embeddings scaled by `sqrt(hidden)`, the scale rounded to the checkpoint's dtype
//!   (`Gemma3TextScaledWordEmbedding`); the tied LM head uses the unscaled table;
//! - RMSNorm with gain `1 + w` (`Gemma3RMSNorm`), four per layer around each sub-block
//!   ("sandwich": `x + post_norm(block(pre_norm(x)))`), and over `head_dim` on queries and keys
//!   before RoPE;
//! - attention scores scaled by `query_pre_attn_scalar^-0.5`;
//! - per `layer_types`, sliding layers (the last `sliding_window` keys, RoPE base
//!   `rope_local_base_freq`) and full layers (RoPE base `rope_theta`);
//! - MLP `down(gelu_tanh(gate(x)) · up(x))`.

use burn::tensor::Tensor;
use safetensors::Dtype;

use crate::model::attention::{AttentionContext, AttentionSpec};
use crate::model::config::{LayerAttention, ModelConfig};
use crate::model::layers::{
    LayerHooks, Linear, LinearTable, RmsNorm, SubBlock, WeightLayout, gated_activation, pack_gate_up, take_gate_up,
};
use crate::model::llama::layer_linears;
use crate::model::table::Table;
use crate::model::weights::{WeightSpec, Weights};

pub struct Gemma3 {
    embed_tokens: Table,
    /// `sqrt(hidden)` in the checkpoint's dtype.
    embed_scale: f32,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Table,
}

struct DecoderLayer {
    input_layernorm: RmsNorm,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    post_attention_layernorm: RmsNorm,
    pre_feedforward_layernorm: RmsNorm,
    gate_proj: Linear,
    up_proj: Linear,
    /// Both, packed (`layers::take_gate_up`), unless the checkpoint stores them at two widths.
    gate_up: Option<Linear>,
    down_proj: Linear,
    post_feedforward_layernorm: RmsNorm,
}

/// The norms of one decoder layer and the width each normalises.
fn layer_norms(c: &ModelConfig) -> [(&'static str, usize); 6] {
    let (h, d) = (c.hidden_size, c.head_dim);
    [
        ("input_layernorm", h),
        ("self_attn.q_norm", d),
        ("self_attn.k_norm", d),
        ("post_attention_layernorm", h),
        ("pre_feedforward_layernorm", h),
        ("post_feedforward_layernorm", h),
    ]
}

/// `sqrt(hidden)` as transformers forms it: an f32 tensor cast to the weights' dtype (bf16 rounds
/// sqrt(3072) = 55.43 to 55.5).
fn embed_scale(hidden: usize, checkpoint: Dtype) -> f32 {
    let scale = (hidden as f64).sqrt() as f32;
    match checkpoint {
        Dtype::BF16 => half::bf16::from_f32(scale).to_f32(),
        Dtype::F16 => half::f16::from_f32(scale).to_f32(),
        _ => scale,
    }
}

impl Gemma3 {
    pub fn spec(c: &ModelConfig) -> WeightSpec {
        let mut spec = WeightSpec::default();
        spec.add_table("model.embed_tokens.weight", [c.vocab_size, c.hidden_size]);
        for l in 0..c.num_layers {
            let p = format!("model.layers.{l}");
            for (name, dim) in layer_norms(c) {
                RmsNorm::declare(&mut spec, &format!("{p}.{name}"), dim);
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

    pub fn build(c: &ModelConfig, w: &mut Weights, table: &mut LinearTable, checkpoint: Dtype) -> Self {
        let embed_tokens = w.take_table("model.embed_tokens.weight");
        let layers = (0..c.num_layers)
            .map(|l| {
                let p = format!("model.layers.{l}");
                let [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj] =
                    layer_linears(c).map(|(name, i, out, bias)| {
                        table.build(w, &format!("{p}.{name}"), i, out, WeightLayout::OutIn, bias)
                    });
                let [
                    input_layernorm,
                    q_norm,
                    k_norm,
                    post_attention_layernorm,
                    pre_feedforward_layernorm,
                    post_feedforward_layernorm,
                ] = layer_norms(c).map(|(name, _)| RmsNorm::build_offset(w, &format!("{p}.{name}"), c.norm_eps));
                DecoderLayer {
                    input_layernorm,
                    q_proj,
                    k_proj,
                    v_proj,
                    o_proj,
                    q_norm,
                    k_norm,
                    post_attention_layernorm,
                    pre_feedforward_layernorm,
                    gate_proj,
                    up_proj,
                    gate_up: take_gate_up(w, &format!("{p}.mlp"), c.hidden_size),
                    down_proj,
                    post_feedforward_layernorm,
                }
            })
            .collect();
        let norm = RmsNorm::build_offset(w, "model.norm", c.norm_eps);
        let lm_head = if c.tie_word_embeddings { embed_tokens.clone() } else { w.take_table("lm_head.weight") };
        Gemma3 { embed_tokens, embed_scale: embed_scale(c.hidden_size, checkpoint), layers, norm, lm_head }
    }
}

impl super::Decoder for Gemma3 {
    fn token_embeddings(&self) -> (&Table, Option<f32>) {
        (&self.embed_tokens, Some(self.embed_scale))
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
        let (rope, window) = match c.layer_types[l] {
            LayerAttention::Full => (c.rope.as_ref().expect("gemma3 config has RoPE"), None),
            LayerAttention::Sliding => {
                (c.local_rope.as_ref().expect("gemma3 config has a local RoPE"), c.sliding_window)
            }
        };
        let spec = AttentionSpec {
            heads: c.num_heads,
            kv_heads: c.num_kv_heads,
            head_dim: c.head_dim,
            scale: c.query_pre_attn_scalar.expect("gemma3 config has query_pre_attn_scalar").powf(-0.5),
            window,
            rope: Some(rope),
        };
        let h = layer.input_layernorm.forward(x.clone());
        let q = layer.q_norm.forward_heads(layer.q_proj.forward(h.clone(), hooks));
        let k = layer.k_norm.forward_heads(layer.k_proj.forward(h.clone(), hooks));
        let v = layer.v_proj.forward(h, hooks);
        let attn = ctx.attend(l, q, k, v, &spec);
        let attn = layer.post_attention_layernorm.forward(layer.o_proj.forward(attn, hooks));
        let x = hooks.residual(l, SubBlock::Attention, x, attn);
        let h = layer.pre_feedforward_layernorm.forward(x.clone());
        let gated = gated_activation(&layer.gate_proj, &layer.up_proj, layer.gate_up.as_ref(), h, c.activation, hooks);
        let mlp = layer.post_feedforward_layernorm.forward(layer.down_proj.forward(gated, hooks));
        hooks.residual(l, SubBlock::Mlp, x, mlp)
    }

    fn final_norm(&self, x: Tensor<2>) -> Tensor<2> {
        self.norm.forward(x)
    }

    fn head(&self) -> &Table {
        &self.lm_head
    }
}
