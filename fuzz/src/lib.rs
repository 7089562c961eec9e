//! What the fuzz targets share: the folder format their inputs use, the fixture model they parse
//! adapters and checkpoints for, and the CPU device (no GPU needed).

use std::sync::{Arc, LazyLock};

use burn::tensor::Device;
use webtune::model::files::MemoryFiles;
use webtune::model::load::{LoadOptions, WeightsDtype};
use webtune::model::{Model, ModelConfig, TextTokenizer};

/// The tests' strict GGUF reader (independent of webtune's writer; not part of the library).
#[path = "../../tests/common/gguf_reader.rs"]
pub mod gguf_reader;

/// Starts each file of a [`folder`] input: `--8<-- <name>\n`, then the file's bytes.
pub const FILE_MARK: &[u8] = b"--8<-- ";

/// The files of a multi-file input (a model or adapter folder): `--8<-- <name>\n<bytes>` repeated.
/// Bytes before the first mark are ignored; a later file of the same name replaces an earlier one.
pub fn folder(data: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut rest = match find(data, FILE_MARK) {
        Some(start) => &data[start + FILE_MARK.len()..],
        None => return files,
    };
    loop {
        let end = find(rest, FILE_MARK).unwrap_or(rest.len());
        let entry = &rest[..end];
        let (name, bytes) = match entry.iter().position(|&b| b == b'\n') {
            Some(newline) => (&entry[..newline], &entry[newline + 1..]),
            None => (entry, &[][..]),
        };
        files.push((String::from_utf8_lossy(name).into_owned(), bytes.to_vec()));
        if end == rest.len() {
            return files;
        }
        rest = &rest[end + FILE_MARK.len()..];
    }
}

/// Writes files in the [`folder`] format (for seeds).
pub fn write_folder(files: &[(&str, &[u8])]) -> Vec<u8> {
    files.iter().flat_map(|(name, bytes)| [FILE_MARK, name.as_bytes(), b"\n", bytes].concat()).collect()
}

/// The file of that name, if the input has one.
pub fn file<'a>(files: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    files.iter().rev().find(|(n, _)| n == name).map(|(_, bytes)| bytes.as_slice())
}

pub fn memory_files(files: &[(String, Vec<u8>)]) -> MemoryFiles {
    let mut memory = MemoryFiles::new("fuzzed folder");
    for (name, bytes) in files {
        memory.insert(name, bytes.clone());
    }
    memory
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

/// burn's CPU backend: parsing must not need a GPU, and it keeps executions fast.
pub fn cpu() -> Device {
    Device::flex()
}

/// How a fuzzed model is loaded, from bits of a selector byte: bit 1 stores the weights in f16,
/// bit 2 lowers the binding limit to 64 bytes so that the tables are split into row blocks.
pub fn load_options(selector: u8) -> LoadOptions {
    LoadOptions {
        weights_dtype: if selector & 2 == 0 { WeightsDtype::F32 } else { WeightsDtype::F16 },
        max_binding_bytes: (selector & 4 != 0).then_some(64),
        device: None,
    }
}

/// Waits for a core future (readbacks).
pub fn block<F: std::future::Future>(future: F) -> F::Output {
    burn::tensor::read_sync(future)
}

/// The configs of the tiny models whose weights the safetensors targets parse (`fuzz/models/`).
pub fn tiny_config(gpt2: bool) -> ModelConfig {
    let text = if gpt2 {
        include_str!("../models/tiny-gpt2/config.json")
    } else {
        include_str!("../models/tiny-llama/config.json")
    };
    ModelConfig::from_json(text).expect("the tiny configs are valid")
}

/// The test suite's llama fixture (the model the adapter and checkpoint seeds belong to), on the
/// CPU.
pub static LLAMA: LazyLock<Model> = LazyLock::new(|| {
    let mut files = MemoryFiles::new("tests/fixtures/llama/base");
    for (name, bytes) in [
        ("config.json", &include_bytes!("../../tests/fixtures/llama/base/config.json")[..]),
        ("model.safetensors", include_bytes!("../../tests/fixtures/llama/base/model.safetensors")),
        ("tokenizer.json", include_bytes!("../../tests/fixtures/llama/base/tokenizer.json")),
        ("tokenizer_config.json", include_bytes!("../../tests/fixtures/llama/base/tokenizer_config.json")),
    ] {
        files.insert(name, bytes.to_vec());
    }
    Model::load(&files, &cpu()).expect("the llama fixture loads")
});

/// The fixture tokenizer with ChatML's special tokens (`tests/fixtures/chat_masks/`) and `settings`
/// as its `tokenizer_config.json`.
pub fn chat_tokenizer(settings: &serde_json::Value) -> webtune::Result<TextTokenizer> {
    let config = tiny_config(false);
    let config = ModelConfig { vocab_size: 514, ..config };
    TextTokenizer::from_parts(include_bytes!("../../tests/fixtures/chat_masks/tokenizer.json"), Some(settings), &config)
}

/// A ChatML template with `{% generation %}` tags (`tests/fixtures/chat_masks/`).
pub const CHATML_TAGGED: &str = "{% for message in messages %}{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}{% else %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// The LoRA run on the llama fixture that checkpoints are restored into.
pub fn checkpoint_run() -> webtune::train::Trainer {
    use webtune::data::Example;
    use webtune::peft::{Adapter, LoraAdapter, LoraConfig};
    use webtune::train::{TrainConfig, Trainer};
    let (lm, tokenizer) = llama();
    let config = LoraConfig { r: 2, target_modules: vec!["q_proj".into(), "v_proj".into()], ..LoraConfig::default() };
    let adapter = block(LoraAdapter::init(&lm, config, 7)).expect("the LoRA initialises");
    let ids = tokenizer.encode("Reverse: abc -> cba", false).expect("the fixture tokenizer encodes");
    let example = Example { labels: ids.iter().map(|&id| i64::from(id)).collect(), input_ids: ids, line: 1 };
    let config = TrainConfig {
        batch_size: 1,
        max_steps: Some(4),
        ..webtune::options::DEFAULTS.train_config().expect("the defaults are valid")
    };
    Trainer::new(lm, Adapter::Lora(adapter), vec![example], Vec::new(), config, LLAMA.pad_id()).expect("the run starts")
}

/// The shared model, for targets that only read it.
pub fn llama() -> (Arc<webtune::model::CausalLm>, Arc<TextTokenizer>) {
    (LLAMA.lm.clone(), LLAMA.tokenizer.clone())
}
