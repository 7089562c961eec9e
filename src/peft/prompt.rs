//! Prompt tuning as PEFT defines it: `num_virtual_tokens` trainable embeddings prepended to every
//! sequence. They take positions `0..n`, the real tokens `n..n+len`; PEFT prefixes the attention
//! mask with ones and the labels with -100.

use burn::tensor::{Tensor, TensorData};

use crate::err;
use crate::error::Result;
use crate::model::{CausalLm, TextTokenizer};
use crate::rng::{Rng, Stream};

/// How the virtual tokens start (PEFT's `prompt_tuning_init`).
#[derive(Clone, Debug, PartialEq)]
pub enum PromptInit {
    /// `RANDOM`: N(0, 1), as `torch.nn.Embedding` initialises.
    Random,
    /// `TEXT`: the embeddings of the tokenised text, truncated or repeated to fit.
    Text(String),
    /// `SAMPLE_VOCAB`: the embeddings of tokens drawn uniformly from the vocabulary.
    SampleVocab,
}

impl PromptInit {
    pub fn peft_name(&self) -> &'static str {
        match self {
            PromptInit::Random => "RANDOM",
            PromptInit::Text(_) => "TEXT",
            PromptInit::SampleVocab => "SAMPLE_VOCAB",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct PromptConfig {
    pub num_virtual_tokens: usize,
    pub init: PromptInit,
}

#[derive(Clone)]
pub struct PromptAdapter {
    pub config: PromptConfig,
    /// `[num_virtual_tokens, hidden]`
    pub embeddings: Tensor<2>,
    /// The base model's layer and head counts, which PEFT records in `adapter_config.json`.
    pub model_layers: usize,
    pub model_heads: usize,
}

impl PromptAdapter {
    pub fn init(lm: &CausalLm, tokenizer: &TextTokenizer, config: PromptConfig, seed: u64) -> Result<Self> {
        let n = config.num_virtual_tokens;
        if n == 0 {
            return Err(err!(InvalidOptions, "prompt tuning needs at least one virtual token"));
        }
        let hidden = lm.config.hidden_size;
        let mut rng = Rng::stream(seed, Stream::PromptInit);
        let token_ids = match &config.init {
            PromptInit::Random => {
                let values: Vec<f32> = (0..n * hidden).map(|_| rng.normal() as f32).collect();
                let embeddings = Tensor::from_data(TensorData::new(values, [n, hidden]), lm.device());
                return Ok(Self::from_embeddings(lm, config, embeddings));
            }
            PromptInit::Text(text) => {
                // PEFT tokenises with the tokenizer's defaults (special tokens included).
                let ids = tokenizer.encode(text, true)?;
                if ids.is_empty() {
                    return Err(err!(InvalidOptions, "the prompt-tuning init text \"{text}\" gives no tokens"));
                }
                ids.iter().copied().cycle().take(n).collect::<Vec<u32>>()
            }
            PromptInit::SampleVocab => (0..n).map(|_| rng.below(lm.config.vocab_size) as u32).collect(),
        };
        // PEFT calls the model's embedding module, so Gemma's rows come out scaled by sqrt(hidden).
        Ok(Self::from_embeddings(lm, config, lm.embed(&token_ids)?))
    }

    pub fn from_embeddings(lm: &CausalLm, config: PromptConfig, embeddings: Tensor<2>) -> Self {
        PromptAdapter { config, embeddings, model_layers: lm.config.num_layers, model_heads: lm.config.num_heads }
    }

    pub fn len(&self) -> usize {
        self.config.num_virtual_tokens
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `[batch·len, hidden]` token embeddings → `[batch·(n+len), hidden]` with the virtual
    /// tokens in front of every sequence.
    pub fn prepend(&self, embeds: Tensor<2>, batch: usize, len: usize) -> Tensor<2> {
        let [n, hidden] = self.embeddings.dims();
        let prompt = self.embeddings.clone().unsqueeze_dim::<3>(0).expand([batch, n, hidden]);
        Tensor::cat(vec![prompt, embeds.reshape([batch, len, hidden])], 1).reshape([batch * (n + len), hidden])
    }
}
