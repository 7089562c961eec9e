//! A model's `model.safetensors`: header, offsets, dtypes and data, read as host tensors (as
//! adapters and checkpoints are) and as the weights of a tiny llama or GPT-2 (first byte: bit 0 picks the model, bits 1-2 the load options: f16 storage, row blocks).
#![no_main]

use libfuzzer_sys::fuzz_target;
use webtune::model::CausalLm;
use webtune::model::files::MemoryFiles;
use webtune::model::weights::read_host_tensors;
use webtune_fuzz::{cpu, load_options, tiny_config};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, file)) = data.split_first() else { return };
    let _ = read_host_tensors("model.safetensors", file);
    let mut files = MemoryFiles::new("fuzzed folder");
    files.insert("model.safetensors", file.to_vec());
    let _ = CausalLm::load_weights(tiny_config(selector & 1 == 1), &files, &cpu(), &load_options(selector));
});
