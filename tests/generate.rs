//! Streaming generation: the KV cache gives the same tokens as re-running the whole sequence,
//! with and without adapters, stops at an end-of-sequence token, and sampling is reproducible
//! for a seed.

mod common;

use std::sync::Arc;

use burn::tensor::{Tensor, TensorData};
use common::*;
use webtune::generate::{FinishReason, Generation, SamplingOptions};
use webtune::model::files::Folder;
use webtune::model::{Model, TextTokenizer};
use webtune::peft::files::import;
use webtune::peft::{Adapter, LoraAdapter, LoraConfig};
use webtune::rng::Rng;

fn adapter(model: &Model, dir: &str) -> Adapter {
    let dir = fixtures().join(dir);
    let config = std::fs::read_to_string(dir.join("adapter_config.json")).unwrap();
    let weights = std::fs::read(dir.join("adapter_model.safetensors")).unwrap();
    block(import(&config, &weights, &model.lm)).unwrap()
}

/// Greedy continuation computed the slow way: the full sequence every step.
fn greedy_without_cache(model: &Model, adapter: &Adapter, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut ids = prompt.to_vec();
    for _ in 0..n {
        let hidden = adapter.hidden(&model.lm, &ids, 1, None, None).unwrap();
        let rows = hidden.dims()[0];
        let logits = floats(model.lm.logits(hidden.narrow(0, rows - 1, 1)));
        let next = logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0 as u32;
        ids.push(next);
    }
    ids[prompt.len()..].to_vec()
}

fn generate(
    model: &Model,
    adapter: &Adapter,
    prompt: &[u32],
    options: SamplingOptions,
) -> (Vec<u32>, String, Option<FinishReason>) {
    let mut generation =
        Generation::new(model.lm.clone(), model.tokenizer.clone(), adapter.clone(), prompt.to_vec(), options).unwrap();
    let (mut ids, mut streamed) = (Vec::new(), String::new());
    while let Some(token) = block(generation.next()).unwrap() {
        ids.push(token.id);
        streamed += &token.text;
    }
    let text = generation.text().unwrap();
    assert!(text.starts_with(&streamed), "the stream must be a prefix of the text");
    (ids, text, generation.finish_reason())
}

#[test]
fn kv_cache_matches_full_recomputation() {
    let device = gpu();
    for (name, method) in
        [("llama", "lora"), ("qwen2", "prompt_tuning_text"), ("gpt2", "lora"), ("gpt2", "prompt_tuning_random")]
    {
        let model = Model::load(&Folder::new(fixtures().join(name).join("base")).unwrap(), &device).unwrap();
        let prompt = model.tokenizer.encode("Reverse: abc ->", false).unwrap();
        for adapter in [Adapter::none(&model.lm), adapter(&model, &format!("{name}/{method}/final"))] {
            let greedy = SamplingOptions { temperature: 0.0, max_tokens: 6, ..SamplingOptions::default() };
            let (ids, text, _) = generate(&model, &adapter, &prompt, greedy);
            let expected = greedy_without_cache(&model, &adapter, &prompt, ids.len().max(1));
            assert_eq!(ids, expected[..ids.len()], "{name}/{method}");
            assert_eq!(text, model.tokenizer.decode(&ids, true).unwrap());
        }
    }
}

#[test]
fn sampling_is_reproducible_and_stops() {
    let device = gpu();
    let model = Model::load(&Folder::new(fixtures().join("llama/base")).unwrap(), &device).unwrap();
    let prompt = model.tokenizer.encode("Reverse:", false).unwrap();
    let options = SamplingOptions { temperature: 1.0, top_p: 0.9, max_tokens: 8, seed: 5 };
    let first = generate(&model, &Adapter::none(&model.lm), &prompt, options.clone());
    let again = generate(&model, &Adapter::none(&model.lm), &prompt, options);
    assert_eq!(first.0, again.0);
    assert!(first.0.len() <= 8);
    assert!(matches!(first.2, Some(FinishReason::Length | FinishReason::Eos)));
}

/// A LoRA on every linear layer with random factors, large enough to make the tiny fixture
/// models' greedy continuations vary (alone they repeat one token).
fn random_lora(model: &Model, seed: u64) -> Adapter {
    let config = LoraConfig { r: 4, alpha: 4.0, target_modules: vec!["all-linear".into()], ..LoraConfig::default() };
    let lora = Adapter::Lora(block(LoraAdapter::init(&model.lm, config, seed)).unwrap());
    let mut rng = Rng::new(seed);
    let values = lora
        .params()
        .into_iter()
        .map(|(_, t)| {
            let dims = t.dims();
            let data: Vec<f32> = (0..dims[0] * dims[1]).map(|_| rng.normal() as f32 * 0.5).collect();
            Tensor::from_data(TensorData::new(data, dims), model.lm.device())
        })
        .collect();
    lora.with_params(values)
}

#[test]
fn kv_cache_stops_at_an_early_eos() {
    let device = gpu();
    for name in MODELS {
        let folder = Folder::new(fixtures().join(name).join("base")).unwrap();
        let model = Model::load(&folder, &device).unwrap();
        let eos = &model.tokenizer.eos_token_ids;
        let prompt = model.tokenizer.encode("Reverse: abc ->", false).unwrap();
        // The first seed whose greedy continuation has, after its first token, one that did not
        // come earlier: made the end-of-sequence token, the cached run must stop there.
        let (lora, full, stop) = (0..20)
            .find_map(|seed| {
                let lora = random_lora(&model, seed);
                let full = greedy_without_cache(&model, &lora, &prompt, 8);
                let stop = (2..full.len())
                    .find(|&k| !full[..k].contains(&full[k]) && !eos.iter().any(|e| full[..=k].contains(e)))?;
                Some((lora, full, stop))
            })
            .unwrap_or_else(|| panic!("{name}: no continuation with a new token"));
        let mut config = model.lm.config.clone();
        config.eos_token_ids = vec![full[stop]];
        let tokenizer = TextTokenizer::load(&folder, &config).unwrap();
        assert!(tokenizer.eos_token_ids.contains(&full[stop]));
        let stopping = Model { lm: model.lm.clone(), tokenizer: Arc::new(tokenizer) };
        let greedy = SamplingOptions { temperature: 0.0, max_tokens: 8, ..SamplingOptions::default() };
        let (ids, text, finish) = generate(&stopping, &lora, &prompt, greedy);
        assert_eq!(ids, full[..stop], "{name}: the tokens before EOS, as without the cache");
        assert_eq!(finish, Some(FinishReason::Eos), "{name}");
        assert_eq!(text, stopping.tokenizer.decode(&full[..stop], true).unwrap(), "{name}");
    }
}
