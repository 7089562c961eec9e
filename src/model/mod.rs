//! Causal language models loaded from Hugging Face folders: config, weights, tokenizer, forward.

pub mod config;
pub mod files;
mod gpt2;
pub mod layers;
mod llama;
pub mod tokenizer;
pub mod weights;

use std::sync::Arc;

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::err;
use crate::error::Result;
pub use config::{Architecture, ModelConfig};
pub use files::FileSource;
use gpt2::Gpt2;
pub use layers::{AttentionContext, KvCache, LayerHooks, Linear, NoAdapter, SubBlock, WeightLayout};
use llama::Llama;
pub use tokenizer::TextTokenizer;

/// A causal LM's network on one device. Its weights are frozen: adapters hook in through
/// [`LayerHooks`] (linear layers, residual adds) and through the input embeddings (prompt
/// tuning), never by mutating it.
pub struct CausalLm {
    pub config: ModelConfig,
    body: Body,
    linears: Vec<Linear>,
    device: Device,
}

enum Body {
    Llama(Box<Llama>),
    Gpt2(Box<Gpt2>),
}

impl CausalLm {
    /// Reads `config.json` and the safetensors weights of `source` onto `device`.
    pub fn load(source: &dyn FileSource, device: &Device) -> Result<Self> {
        let config = ModelConfig::from_json(&source.read_text("config.json")?)?;
        Self::load_weights(config, source, device)
    }

    /// Reads the weights for an already parsed config.
    pub fn load_weights(config: ModelConfig, source: &dyn FileSource, device: &Device) -> Result<Self> {
        let weights = weights::load_weights(source, &Self::spec(&config), device)?;
        Ok(Self::build(config, weights, device))
    }

    /// A model with random weights (benchmarks, tests of shapes at scale).
    pub fn random(config: ModelConfig, device: &Device) -> Self {
        let weights = weights::random_weights(&Self::spec(&config), device);
        Self::build(config, weights, device)
    }

    fn spec(config: &ModelConfig) -> weights::WeightSpec {
        match config.architecture {
            Architecture::Llama | Architecture::Qwen2 => Llama::spec(config),
            Architecture::Gpt2 => Gpt2::spec(config),
        }
    }

    fn build(config: ModelConfig, weights: weights::Weights, device: &Device) -> Self {
        let mut table = layers::LinearTable::default();
        let body = match config.architecture {
            Architecture::Llama | Architecture::Qwen2 => {
                Body::Llama(Box::new(Llama::build(&config, weights, &mut table)))
            }
            Architecture::Gpt2 => Body::Gpt2(Box::new(Gpt2::build(&config, weights, &mut table))),
        };
        CausalLm { config, body, linears: table.layers, device: device.clone() }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Number of weights (embeddings counted once when tied), as transformers' `num_parameters`.
    pub fn parameter_count(&self) -> usize {
        let [vocab, hidden] = self.embedding_table().dims();
        let tables = vocab * hidden + if self.config.tie_word_embeddings { 0 } else { vocab * hidden };
        let linears: usize = self
            .linears
            .iter()
            .map(|l| l.in_features * l.out_features + l.out_features * usize::from(l.has_bias()))
            .sum();
        let positions = match &self.body {
            Body::Gpt2(m) => m.position_count(),
            Body::Llama(_) => 0,
        };
        // Norms: per layer two (RMSNorm weight, or LayerNorm weight + bias), plus the final one.
        let norm_params = if self.config.architecture == Architecture::Gpt2 { 2 * hidden } else { hidden };
        tables + linears + positions + norm_params * (2 * self.config.num_layers + 1)
    }

    /// Every linear layer, indexed by slot, with its HF module path: what LoRA can target.
    pub fn linears(&self) -> &[Linear] {
        &self.linears
    }

    /// The input embedding table `[vocab, hidden]`.
    pub fn embedding_table(&self) -> Tensor<2> {
        match &self.body {
            Body::Llama(m) => m.embed_tokens.weight.clone(),
            Body::Gpt2(m) => m.wte.weight.clone(),
        }
    }

    /// Token embeddings `[ids.len(), hidden]`; ids outside the vocabulary are an error.
    pub fn embed(&self, ids: &[u32]) -> Result<Tensor<2>> {
        let vocab = self.config.vocab_size;
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(err!(InvalidTokenizer, "token id {bad} is outside the model's vocabulary of {vocab}"));
        }
        let ids: Vec<i64> = ids.iter().map(|&id| id as i64).collect();
        let n = ids.len();
        let ids = Tensor::<1, Int>::from_data(TensorData::new(ids, [n]), &self.device);
        Ok(self.embedding_table().select(0, ids))
    }

    /// Final hidden states `[tokens, hidden]` for input embeddings `[tokens, hidden]`
    /// (tokens = batch × q_len, row-major) under the attention context `ctx`.
    pub fn hidden(&self, embeds: Tensor<2>, ctx: &mut AttentionContext, hooks: &dyn LayerHooks) -> Tensor<2> {
        match &self.body {
            Body::Llama(m) => m.hidden(&self.config, embeds, ctx, hooks),
            Body::Gpt2(m) => m.hidden(&self.config, embeds, ctx, hooks),
        }
    }

    /// Logits `[tokens, vocab]` of hidden states `[tokens, hidden]`.
    pub fn logits(&self, hidden: Tensor<2>) -> Tensor<2> {
        hidden.matmul(self.lm_head().transpose())
    }

    /// The output projection `[vocab, hidden]` (the embedding table when tied).
    pub fn lm_head(&self) -> Tensor<2> {
        match &self.body {
            Body::Llama(m) => m.lm_head(),
            Body::Gpt2(m) => m.lm_head(),
        }
    }

    /// Logits `[batch·len, vocab]` of a right-padded batch of token ids (`ids.len() = batch·len`;
    /// `key_mask` 1 for real tokens, `None` when nothing is padded).
    pub fn forward(
        &self,
        ids: &[u32],
        batch: usize,
        key_mask: Option<&[u8]>,
        hooks: &dyn LayerHooks,
    ) -> Result<Tensor<2>> {
        let len = ids.len() / batch;
        let mut ctx = AttentionContext::new(batch, len, key_mask, None, &self.device);
        let hidden = self.hidden(self.embed(ids)?, &mut ctx, hooks);
        Ok(self.logits(hidden))
    }
}

/// A model ready to use: the network plus its tokenizer. The network is shared (training,
/// evaluation and generation all read the same frozen weights).
pub struct Model {
    pub lm: Arc<CausalLm>,
    pub tokenizer: Arc<TextTokenizer>,
}

impl Model {
    /// Loads `config.json`, the weights, `tokenizer.json` and `tokenizer_config.json`. The
    /// tokenizer is checked first: it is cheap, and a mismatch makes the weights useless.
    pub fn load(source: &dyn FileSource, device: &Device) -> Result<Self> {
        let config = ModelConfig::from_json(&source.read_text("config.json")?)?;
        let tokenizer = TextTokenizer::load(source, &config)?;
        let lm = CausalLm::load_weights(config, source, device)?;
        Ok(Model { lm: Arc::new(lm), tokenizer: Arc::new(tokenizer) })
    }

    /// The id batches are padded with: the pad token, else EOS, else 0 (padding is masked out).
    pub fn pad_id(&self) -> u32 {
        self.tokenizer.pad_token_id.or(self.tokenizer.eos_token_ids.first().copied()).unwrap_or(0)
    }
}
