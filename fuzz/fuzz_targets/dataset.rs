//! Dataset files: JSONL, JSON array, CSV and TXT (first byte: format and options; the rest: the
//! file), loaded and previewed with a ChatML tokenizer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::json;
use webtune::data::{DataOptions, IGNORE_INDEX, load_dataset, preview};
use webtune_fuzz::{CHATML_TAGGED, chat_tokenizer};

const NAMES: [&str; 8] = ["d.jsonl", "d.json", "d.csv", "d.txt", "d.NDJSON", "d.JSON", "d.tsv", "d"];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, file)) = data.split_first() else { return };
    let name = NAMES[usize::from(selector & 7)];
    let options = DataOptions {
        max_len: if selector & 8 == 0 { 512 } else { 6 },
        template: (selector & 16 != 0)
            .then(|| "Q: {{ instruction }}{% if input %} ({{ input }}){% endif %}\nA:".to_owned()),
        skip_bad_rows: selector & 32 != 0,
    };
    let settings = json!({ "chat_template": CHATML_TAGGED, "bos_token": "<|endoftext|>", "eos_token": "<|im_end|>" });
    let tokenizer = chat_tokenizer(&settings).expect("the fixture tokenizer loads");
    if let Ok(dataset) = load_dataset(name, file, &tokenizer, &options) {
        for example in &dataset.examples {
            assert!(!example.input_ids.is_empty() && example.input_ids.len() <= options.max_len);
            assert_eq!(example.input_ids.len(), example.labels.len());
            assert!(example.labels.iter().any(|&label| label != IGNORE_INDEX));
        }
    }
    let _ = preview(name, file, &tokenizer, &options, 8);
});
