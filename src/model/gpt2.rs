//! `GPT2LMHeadModel`. Module paths carry the `transformer.` prefix as in transformers (and so in
//! PEFT keys); checkpoints saved without it (hub `gpt2`) load too. Conv1D weights are `[in, out]`.

use burn::tensor::Tensor;

use crate::model::attention::{AttentionContext, AttentionSpec};
use crate::model::config::ModelConfig;
use crate::model::layers::{LayerHooks, LayerNorm, Linear, LinearTable, SubBlock, WeightLayout, activate};
use crate::model::table::Table;
use crate::model::weights::{WeightSpec, Weights};

pub struct Gpt2 {
    wte: Table,
    wpe: Table,
    h: Vec<Block>,
    ln_f: LayerNorm,
    /// `wte` when tied.
    lm_head: Table,
}

struct Block {
    ln_1: LayerNorm,
    c_attn: Linear,
    attn_c_proj: Linear,
    ln_2: LayerNorm,
    c_fc: Linear,
    mlp_c_proj: Linear,
}

fn block_linears(c: &ModelConfig) -> [(&'static str, usize, usize); 4] {
    let (h, i) = (c.hidden_size, c.intermediate_size);
    [("attn.c_attn", h, 3 * h), ("attn.c_proj", h, h), ("mlp.c_fc", h, i), ("mlp.c_proj", i, h)]
}

impl Gpt2 {
    pub fn spec(c: &ModelConfig) -> WeightSpec {
        let mut spec = WeightSpec::with_optional_prefix("transformer.");
        spec.add_table("transformer.wte.weight", [c.vocab_size, c.hidden_size]);
        spec.add_table("transformer.wpe.weight", [c.max_positions, c.hidden_size]);
        for l in 0..c.num_layers {
            let p = format!("transformer.h.{l}");
            LayerNorm::declare(&mut spec, &format!("{p}.ln_1"), c.hidden_size);
            LayerNorm::declare(&mut spec, &format!("{p}.ln_2"), c.hidden_size);
            for (name, i, o) in block_linears(c) {
                LinearTable::declare(&mut spec, &format!("{p}.{name}"), i, o, WeightLayout::InOut, true);
            }
        }
        LayerNorm::declare(&mut spec, "transformer.ln_f", c.hidden_size);
        if !c.tie_word_embeddings {
            spec.add_table("lm_head.weight", [c.vocab_size, c.hidden_size]);
        }
        spec
    }

    pub fn build(c: &ModelConfig, w: &mut Weights, table: &mut LinearTable) -> Self {
        let wte = w.take_table("transformer.wte.weight");
        let wpe = w.take_table("transformer.wpe.weight");
        let h = (0..c.num_layers)
            .map(|l| {
                let p = format!("transformer.h.{l}");
                let [c_attn, attn_c_proj, c_fc, mlp_c_proj] = block_linears(c)
                    .map(|(name, i, o)| table.build(w, &format!("{p}.{name}"), i, o, WeightLayout::InOut, true));
                Block {
                    ln_1: LayerNorm::build(w, &format!("{p}.ln_1"), c.norm_eps),
                    c_attn,
                    attn_c_proj,
                    ln_2: LayerNorm::build(w, &format!("{p}.ln_2"), c.norm_eps),
                    c_fc,
                    mlp_c_proj,
                }
            })
            .collect();
        let ln_f = LayerNorm::build(w, "transformer.ln_f", c.norm_eps);
        let lm_head = if c.tie_word_embeddings { wte.clone() } else { w.take_table("lm_head.weight") };
        Gpt2 { wte, wpe, h, ln_f, lm_head }
    }
}

impl super::Decoder for Gpt2 {
    fn token_embeddings(&self) -> (&Table, Option<f32>) {
        (&self.wte, None)
    }

    /// Token embeddings (or soft prompt + token embeddings) plus the learned positions, as GPT-2
    /// adds them for `inputs_embeds`.
    fn stream(&self, embeds: Tensor<2>, ctx: &AttentionContext) -> Tensor<2> {
        let (b, len, past) = (ctx.batch, ctx.q_len, ctx.past_len());
        let positions: Vec<u32> = (0..b).flat_map(|_| (past..past + len).map(|p| p as u32)).collect();
        embeds + self.wpe.lookup(&positions)
    }

    fn layer(
        &self,
        c: &ModelConfig,
        l: usize,
        x: Tensor<2>,
        ctx: &mut AttentionContext,
        hooks: &dyn LayerHooks,
    ) -> Tensor<2> {
        let block = &self.h[l];
        let mut scale = if c.scale_attn_weights { 1.0 / (c.head_dim as f64).sqrt() } else { 1.0 };
        if c.scale_attn_by_inverse_layer_idx {
            scale /= (l + 1) as f64;
        }
        let spec = AttentionSpec {
            heads: c.num_heads,
            kv_heads: c.num_heads,
            head_dim: c.head_dim,
            scale,
            window: None,
            rope: None,
        };
        let hidden = c.hidden_size;
        let qkv = block.c_attn.forward(block.ln_1.forward(x.clone()), hooks);
        let part = |i: usize| qkv.clone().narrow(1, i * hidden, hidden);
        let attn = ctx.attend(l, part(0), part(1), part(2), &spec);
        let x = hooks.residual(l, SubBlock::Attention, x, block.attn_c_proj.forward(attn, hooks));
        let h = activate(block.c_fc.forward(block.ln_2.forward(x.clone()), hooks), c.activation);
        hooks.residual(l, SubBlock::Mlp, x, block.mlp_c_proj.forward(h, hooks))
    }

    fn final_norm(&self, x: Tensor<2>) -> Tensor<2> {
        self.ln_f.forward(x)
    }

    fn head(&self) -> &Table {
        &self.lm_head
    }
}
