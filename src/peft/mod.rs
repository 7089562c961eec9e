//! Parameter-efficient fine-tuning methods and their PEFT-compatible files.

pub mod files;
pub mod gguf;
pub mod lora;
pub mod prompt;
mod svd;

use burn::tensor::Tensor;

use crate::error::Result;
use crate::model::{AttentionContext, CausalLm, KvCache, NoAdapter};
pub use lora::{LoraAdapter, LoraConfig, LoraInit, default_targets};
pub use prompt::{PromptAdapter, PromptConfig, PromptInit};

/// A trained or training adapter: what PEFT calls a `PeftModel`'s adapter.
#[derive(Clone)]
pub enum Adapter {
    Lora(LoraAdapter),
    Prompt(PromptAdapter),
}

impl Adapter {
    /// No adapter: the base model (a LoRA over no layer), for evaluating or sampling the base.
    pub fn none(lm: &CausalLm) -> Adapter {
        Adapter::Lora(LoraAdapter::from_modules(lm, LoraConfig::default(), 0, Vec::new()))
    }

    /// Positions the adapter adds in front of every sequence (prompt tuning's virtual tokens).
    pub fn prefix_len(&self) -> usize {
        match self {
            Adapter::Lora(_) => 0,
            Adapter::Prompt(p) => p.len(),
        }
    }

    /// PEFT's `peft_type`.
    pub fn peft_type(&self) -> &'static str {
        match self {
            Adapter::Lora(_) => "LORA",
            Adapter::Prompt(_) => "PROMPT_TUNING",
        }
    }

    /// The trainable tensors with their PEFT state-dict keys, in a fixed order.
    pub fn params(&self) -> Vec<(String, Tensor<2>)> {
        match self {
            Adapter::Lora(l) => l
                .modules
                .iter()
                .flat_map(|m| {
                    [(lora::peft_key(&m.path, "A"), m.a.clone()), (lora::peft_key(&m.path, "B"), m.b.clone())]
                })
                .collect(),
            Adapter::Prompt(p) => vec![("prompt_embeddings".to_owned(), p.embeddings.clone())],
        }
    }

    /// Number of trainable values (what PEFT's `print_trainable_parameters` counts).
    pub fn trainable_parameters(&self) -> usize {
        self.params().iter().map(|(_, t)| t.dims().iter().product::<usize>()).sum()
    }

    /// The same adapter with new values for its trainable tensors (in [`Adapter::params`] order).
    pub fn with_params(&self, values: Vec<Tensor<2>>) -> Adapter {
        let mut values = values.into_iter();
        let mut next = || values.next().expect("one value per trainable tensor");
        match self {
            Adapter::Lora(l) => {
                let mut l = l.clone();
                for m in &mut l.modules {
                    m.a = next();
                    m.b = next();
                }
                Adapter::Lora(l)
            }
            Adapter::Prompt(p) => Adapter::Prompt(PromptAdapter { embeddings: next(), ..p.clone() }),
        }
    }

    /// A copy whose trainable tensors are autodiff leaves, for one training step.
    pub fn tracked(&self) -> Adapter {
        self.with_params(self.params().into_iter().map(|(_, t)| t.autodiff().require_grad()).collect())
    }

    /// Enables dropout with masks drawn from `seed` (training), or disables it with `None`.
    pub fn set_training(&mut self, seed: Option<u64>) {
        if let Adapter::Lora(l) = self {
            l.set_training(seed);
        }
    }

    /// Final hidden states `[batch·(prefix+len), hidden]` of right-padded `ids` (`batch·len`).
    /// With a non-empty `cache`, the prompt-tuning prefix is already in it and is not added again.
    pub fn hidden(
        &self,
        lm: &CausalLm,
        ids: &[u32],
        batch: usize,
        key_mask: Option<&[u8]>,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor<2>> {
        let len = ids.len() / batch;
        let embeds = lm.embed(ids)?;
        let first_pass = cache.as_ref().is_none_or(|c| c.is_empty());
        match self {
            Adapter::Lora(lora) => {
                let mut ctx = AttentionContext::new(batch, len, key_mask, cache, lm.device());
                let hidden = lm.hidden(embeds, &mut ctx, lora);
                ctx.finish();
                Ok(hidden)
            }
            Adapter::Prompt(prompt) => {
                let n = if first_pass { prompt.len() } else { 0 };
                let embeds = if first_pass { prompt.prepend(embeds, batch, len) } else { embeds };
                let mask = key_mask.map(|m| prefixed_mask(m, batch, len, n));
                let mut ctx = AttentionContext::new(batch, n + len, mask.as_deref(), cache, lm.device());
                let hidden = lm.hidden(embeds, &mut ctx, &NoAdapter);
                ctx.finish();
                Ok(hidden)
            }
        }
    }
}

/// A `[batch, len]` key mask with `n` ones in front of every row.
fn prefixed_mask(mask: &[u8], batch: usize, len: usize, n: usize) -> Vec<u8> {
    (0..batch).flat_map(|b| std::iter::repeat_n(1, n).chain(mask[b * len..(b + 1) * len].iter().copied())).collect()
}
