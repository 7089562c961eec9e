//! Sharded weights: `model.safetensors.index.json` and the shards it names, for a tiny llama or
//! GPT-2 (`config.json` in the folder names which; no config means llama; `f16` or `blocks` in it picks the load options).
#![no_main]

use libfuzzer_sys::fuzz_target;
use webtune::model::CausalLm;
use webtune_fuzz::{cpu, file, folder, load_options, memory_files, tiny_config};

fuzz_target!(|data: &[u8]| {
    let files = folder(data);
    let gpt2 = file(&files, "config.json").is_some_and(|c| c.windows(4).any(|w| w == b"gpt2"));
    let config = file(&files, "config.json").unwrap_or_default();
    let has = |word: &[u8]| config.windows(word.len()).any(|w| w == word);
    let options = load_options(if has(b"f16") { 2 } else { 0 } | if has(b"blocks") { 4 } else { 0 });
    let files: Vec<_> = files.into_iter().filter(|(name, _)| name != "config.json").collect();
    let _ = CausalLm::load_weights(tiny_config(gpt2), &memory_files(&files), &cpu(), &options);
});
