//! `config.json`: parsed into a model config, checked against a tokenizer, then loaded as the
//! llama fixture's config, so that every size it names meets the weight file's header before
//! anything is allocated.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webtune::model::files::MemoryFiles;
use webtune::model::{Model, ModelConfig, TextTokenizer};
use webtune_fuzz::cpu;

const FIXTURE: [(&str, &[u8]); 3] = [
    ("model.safetensors", include_bytes!("../../tests/fixtures/llama/base/model.safetensors")),
    ("tokenizer.json", include_bytes!("../../tests/fixtures/llama/base/tokenizer.json")),
    ("tokenizer_config.json", include_bytes!("../../tests/fixtures/llama/base/tokenizer_config.json")),
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(config) = ModelConfig::from_json(text) else { return };
    let tokenizer = include_bytes!("../../tests/fixtures/tokenizer/tokenizer.json");
    let _ = TextTokenizer::from_parts(tokenizer, None, &config);
    let mut files = MemoryFiles::new("fuzzed model");
    files.insert("config.json", data.to_vec());
    for (name, bytes) in FIXTURE {
        files.insert(name, bytes.to_vec());
    }
    let _ = Model::load(&files, &cpu());
});
