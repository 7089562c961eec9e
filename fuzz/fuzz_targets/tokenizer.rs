//! `tokenizer.json` and `tokenizer_config.json`: read, then used the ways webtune uses them
//! (encode with offsets, decode, token texts, special tokens, the chat template on a dataset).
#![no_main]

use libfuzzer_sys::fuzz_target;
use webtune::data::{DataOptions, chat_prompt, load_dataset};
use webtune::model::{ModelConfig, TextTokenizer};
use webtune_fuzz::{file, folder, tiny_config};

const ROWS: &str = "{\"messages\": [{\"role\": \"user\", \"content\": \"Reverse: abc ->\"}, {\"role\": \"assistant\", \"content\": \" cba\"}]}\n{\"prompt\": \"Reverse: dog ->\", \"completion\": \" god\"}\n{\"text\": \"first line\\nsecond\"}\n";

fuzz_target!(|data: &[u8]| {
    let files = folder(data);
    let Some(tokenizer_json) = file(&files, "tokenizer.json") else { return };
    let settings = file(&files, "tokenizer_config.json").and_then(|bytes| serde_json::from_slice(bytes).ok());
    // Any vocabulary fits: what is fuzzed here is the tokenizer, not its match with a model.
    let config = ModelConfig { vocab_size: usize::MAX, ..tiny_config(false) };
    let Ok(tokenizer) = TextTokenizer::from_parts(tokenizer_json, settings.as_ref(), &config) else { return };
    for text in ["Reverse: abc -> cba<|im_end|>\n", "", " \u{e9}\u{1F600}\t\r\n<|endoftext|>"] {
        if let Ok((ids, _offsets)) = tokenizer.encode_with_offsets(text, true) {
            let _ = tokenizer.decode(&ids, false);
            let _ = tokenizer.decode(&ids, true);
            for &id in ids.iter().take(64) {
                let _ = tokenizer.token_text(id);
            }
        }
    }
    let _ = tokenizer.special_token_ids();
    let _ = chat_prompt(&tokenizer, "hello");
    let options = DataOptions { max_len: 64, template: None, skip_bad_rows: true };
    let _ = load_dataset("rows.jsonl", ROWS.as_bytes(), &tokenizer, &options);
});
