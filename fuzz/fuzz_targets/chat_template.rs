//! A `chat_template` (from `tokenizer_config.json`) rendering a conversation dataset, with the
//! assistant masks: the template is the folder's `template`, the rows its `data.jsonl`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::json;
use webtune::data::{DataOptions, chat_prompt, load_dataset, preview};
use webtune_fuzz::{chat_tokenizer, file, folder};

fuzz_target!(|data: &[u8]| {
    let files = folder(data);
    let Some(Ok(template)) = file(&files, "template").map(std::str::from_utf8) else { return };
    let rows = file(&files, "data.jsonl").unwrap_or_default();
    let settings = json!({ "chat_template": template, "bos_token": "<|endoftext|>", "eos_token": "<|im_end|>" });
    let tokenizer = chat_tokenizer(&settings).expect("the fixture tokenizer loads");
    let _ = chat_prompt(&tokenizer, "hello");
    let options = DataOptions { max_len: 256, template: None, skip_bad_rows: true };
    if let Ok(dataset) = load_dataset("chat.jsonl", rows, &tokenizer, &options) {
        for example in &dataset.examples {
            assert_eq!(example.input_ids.len(), example.labels.len());
        }
    }
    let _ = preview("chat.jsonl", rows, &tokenizer, &options, 8);
});
