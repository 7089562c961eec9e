//! Text generation with a KV cache, streamed one token at a time: the prompt is run once, then
//! each step feeds only the newest token. Sampling (temperature, nucleus) happens on the host with
//! a seeded generator, so a seed gives the same text in the browser and natively.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::err;
use crate::error::Result;
use crate::model::{CausalLm, KvCache, TextTokenizer};
use crate::peft::Adapter;
use crate::readback;
use crate::rng::Rng;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct SamplingOptions {
    /// 0 picks the most likely token every time.
    pub temperature: f64,
    /// Nucleus sampling: sample among the most likely tokens whose probabilities sum to `top_p`.
    pub top_p: f64,
    pub max_tokens: usize,
    pub seed: u64,
}

impl Default for SamplingOptions {
    fn default() -> Self {
        SamplingOptions { temperature: 0.7, top_p: 0.9, max_tokens: 128, seed: 0 }
    }
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FinishReason {
    /// The model produced an end-of-sequence token.
    Eos,
    /// `max_tokens` were generated.
    Length,
    /// The model's context window is full.
    Context,
}

/// One streamed step: the token and the text it completes (may be empty while a multi-byte
/// character is still incomplete).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Token {
    pub id: u32,
    pub text: String,
}

pub struct Generation {
    lm: Arc<CausalLm>,
    tokenizer: Arc<TextTokenizer>,
    adapter: Adapter,
    options: SamplingOptions,
    cache: KvCache,
    rng: Rng,
    /// Tokens not yet fed to the model (the prompt, then each sampled token).
    pending: Vec<u32>,
    generated: Vec<u32>,
    /// Bytes of the decoded text already streamed out.
    emitted: usize,
    /// Tokens since text was last streamed (a character can span up to 4 byte tokens).
    held: usize,
    finish: Option<FinishReason>,
}

impl Generation {
    pub fn new(
        lm: Arc<CausalLm>,
        tokenizer: Arc<TextTokenizer>,
        adapter: Adapter,
        prompt: Vec<u32>,
        options: SamplingOptions,
    ) -> Result<Self> {
        if prompt.is_empty() {
            return Err(err!(InvalidOptions, "the prompt gives no tokens"));
        }
        if !(options.temperature >= 0.0 && options.top_p > 0.0 && options.top_p <= 1.0) {
            return Err(err!(InvalidOptions, "temperature must be ≥ 0 and top-p in (0, 1]"));
        }
        let mut adapter = adapter;
        adapter.set_training(None);
        let rng = Rng::new(options.seed);
        Ok(Generation {
            lm,
            tokenizer,
            adapter,
            options,
            cache: KvCache::default(),
            rng,
            pending: prompt,
            generated: Vec::new(),
            emitted: 0,
            held: 0,
            finish: None,
        })
    }

    /// Why generation ended, once it has.
    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.finish
    }

    /// Generates the next token, or `None` once finished.
    pub async fn next(&mut self) -> Result<Option<Token>> {
        if self.finish.is_some() {
            return Ok(None);
        }
        if self.generated.len() >= self.options.max_tokens {
            self.finish = Some(FinishReason::Length);
            return Ok(None);
        }
        let context =
            self.cache.len() + self.adapter.prefix_len() * usize::from(self.cache.is_empty()) + self.pending.len();
        if context > self.lm.config.max_positions {
            self.finish = Some(FinishReason::Context);
            return Ok(None);
        }
        let hidden = self.adapter.hidden(&self.lm, &self.pending, 1, None, Some(&mut self.cache))?;
        let rows = hidden.dims()[0];
        let logits = readback::floats(self.lm.logits(hidden.narrow(0, rows - 1, 1))).await?;
        let id = sample(&logits, &self.options, &mut self.rng);
        self.pending = vec![id];
        if self.tokenizer.eos_token_ids.contains(&id) {
            self.finish = Some(FinishReason::Eos);
            return Ok(None);
        }
        self.generated.push(id);
        Ok(Some(Token { id, text: self.new_text()? }))
    }

    /// Everything generated so far, decoded.
    pub fn text(&self) -> Result<String> {
        self.tokenizer.decode(&self.generated, true)
    }

    /// The decoded text not yet streamed. A trailing replacement character is held back for up
    /// to 4 tokens, since the next byte tokens may complete the character.
    fn new_text(&mut self) -> Result<String> {
        let text = self.text()?;
        let incomplete = text.ends_with('\u{FFFD}') && self.held < 4;
        if incomplete || !text.is_char_boundary(self.emitted) || text.len() < self.emitted {
            self.held += 1;
            return Ok(String::new());
        }
        self.held = 0;
        let fresh = text[self.emitted..].to_owned();
        self.emitted = text.len();
        Ok(fresh)
    }
}

/// Picks a token from logits: greedy at temperature 0, else nucleus sampling.
fn sample(logits: &[f32], options: &SamplingOptions, rng: &mut Rng) -> u32 {
    let greedy = || logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i as u32);
    if options.temperature == 0.0 {
        return greedy();
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let mut probs: Vec<(u32, f64)> =
        logits.iter().enumerate().map(|(i, &l)| (i as u32, ((l as f64 - max) / options.temperature).exp())).collect();
    probs.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total: f64 = probs.iter().map(|p| p.1).sum();
    let mut kept = 0.0;
    let cut = probs.iter().position(|p| {
        kept += p.1 / total;
        kept >= options.top_p
    });
    probs.truncate(cut.map_or(probs.len(), |i| i + 1));
    let mut target = rng.next_f64() * probs.iter().map(|p| p.1).sum::<f64>();
    for &(id, p) in &probs {
        target -= p;
        if target <= 0.0 {
            return id;
        }
    }
    probs.last().map_or_else(greedy, |p| p.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_and_nucleus() {
        let logits = [0.0, 5.0, 4.9, -3.0];
        let greedy = SamplingOptions { temperature: 0.0, ..SamplingOptions::default() };
        assert_eq!(sample(&logits, &greedy, &mut Rng::new(0)), 1);
        // top-p 0.5 keeps only the most likely token.
        let narrow = SamplingOptions { temperature: 1.0, top_p: 0.5, ..SamplingOptions::default() };
        assert!((0..50).all(|s| sample(&logits, &narrow, &mut Rng::new(s)) == 1));
        // top-p 1 samples both likely tokens, never the unlikely ones at this temperature.
        let wide = SamplingOptions { temperature: 1.0, top_p: 0.99, ..SamplingOptions::default() };
        let picks: Vec<u32> = (0..200).map(|s| sample(&logits, &wide, &mut Rng::new(s))).collect();
        assert!(picks.contains(&1) && picks.contains(&2) && !picks.contains(&3));
    }
}
