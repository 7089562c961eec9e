//! `GPT2LMHeadModel`. Module paths carry the `transformer.` prefix as in transformers (and so in
//! PEFT keys); checkpoints saved without it (hub `gpt2`) load too. Conv1D weights are `[in, out]`.

use burn::tensor::{Int, Tensor, TensorData};

use crate::model::config::ModelConfig;
use crate::model::layers::{
    AttentionContext, Embedding, LayerHooks, LayerNorm, Linear, LinearTable, SubBlock, WeightLayout, activate,
    split_heads,
};
use crate::model::weights::{WeightSpec, Weights};

pub struct Gpt2 {
    pub wte: Embedding,
    wpe: Embedding,
    h: Vec<Block>,
    ln_f: LayerNorm,
    /// `None` when tied to `wte`.
    lm_head: Option<Tensor<2>>,
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
        spec.add("transformer.wte.weight", &[c.vocab_size, c.hidden_size]);
        spec.add("transformer.wpe.weight", &[c.max_positions, c.hidden_size]);
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
            spec.add("lm_head.weight", &[c.vocab_size, c.hidden_size]);
        }
        spec
    }

    pub fn build(c: &ModelConfig, mut w: Weights, table: &mut LinearTable) -> Self {
        let wte = Embedding { weight: w.take("transformer.wte.weight") };
        let wpe = Embedding { weight: w.take("transformer.wpe.weight") };
        let h = (0..c.num_layers)
            .map(|l| {
                let p = format!("transformer.h.{l}");
                let [c_attn, attn_c_proj, c_fc, mlp_c_proj] = block_linears(c)
                    .map(|(name, i, o)| table.build(&mut w, &format!("{p}.{name}"), i, o, WeightLayout::InOut, true));
                Block {
                    ln_1: LayerNorm::build(&mut w, &format!("{p}.ln_1"), c.norm_eps),
                    c_attn,
                    attn_c_proj,
                    ln_2: LayerNorm::build(&mut w, &format!("{p}.ln_2"), c.norm_eps),
                    c_fc,
                    mlp_c_proj,
                }
            })
            .collect();
        let ln_f = LayerNorm::build(&mut w, "transformer.ln_f", c.norm_eps);
        let lm_head = (!c.tie_word_embeddings).then(|| w.take("lm_head.weight"));
        Gpt2 { wte, wpe, h, ln_f, lm_head }
    }

    /// `embeds [tokens, hidden]` (token embeddings, or soft prompt + token embeddings) → hidden
    /// states after `ln_f`. Learned positions are added here, as GPT-2 does for `inputs_embeds`.
    pub fn hidden(
        &self,
        c: &ModelConfig,
        embeds: Tensor<2>,
        ctx: &mut AttentionContext,
        hooks: &dyn LayerHooks,
    ) -> Tensor<2> {
        let (b, len, past) = (ctx.batch, ctx.q_len, ctx.past_len());
        let device = embeds.device();
        let positions: Vec<i64> = (0..b).flat_map(|_| (past..past + len).map(|p| p as i64)).collect();
        let positions = Tensor::<1, Int>::from_data(TensorData::new(positions, [b * len]), &device);
        let mut x = embeds + self.wpe.forward(positions);
        let hidden = c.hidden_size;
        for (l, block) in self.h.iter().enumerate() {
            let mut scale = if c.scale_attn_weights { 1.0 / (c.head_dim as f64).sqrt() } else { 1.0 };
            if c.scale_attn_by_inverse_layer_idx {
                scale /= (l + 1) as f64;
            }
            let qkv = block.c_attn.forward(block.ln_1.forward(x.clone()), hooks);
            let heads = |i: usize| split_heads(qkv.clone().narrow(1, i * hidden, hidden), b, len, c.num_heads);
            let attn = ctx.attend(l, heads(0), heads(1), heads(2), scale);
            x = hooks.residual(l, SubBlock::Attention, x, block.attn_c_proj.forward(attn, hooks));
            let h = activate(block.c_fc.forward(block.ln_2.forward(x.clone()), hooks), c.activation);
            x = hooks.residual(l, SubBlock::Mlp, x, block.mlp_c_proj.forward(h, hooks));
        }
        self.ln_f.forward(x)
    }

    /// Number of learned position-embedding weights.
    pub fn position_count(&self) -> usize {
        self.wpe.weight.dims().iter().product()
    }

    /// The output projection `[vocab, hidden]` (the token embedding table when tied).
    pub fn lm_head(&self) -> Tensor<2> {
        self.lm_head.clone().unwrap_or_else(|| self.wte.weight.clone())
    }
}
