//! The chat templates of Qwen3 (Qwen/Qwen3-0.6B) and Gemma 3 (google/gemma-3-270m-it) render
//! conversations exactly as transformers' `apply_chat_template` renders them
//! (`tests/fixtures/chat_templates/`: the templates, the conversations and transformers' text,
//! made by `make_expected.py`).

mod common;

use common::*;
use serde_json::{Value, json};
use webtune::data::{DataOptions, preview, render_chat};
use webtune::model::{ModelConfig, TextTokenizer};

/// The fixture tokenizer with a model's chat template and special-token strings.
fn tokenizer(fixture: &Value) -> TextTokenizer {
    let bytes = std::fs::read(fixtures().join("tokenizer/tokenizer.json")).unwrap();
    let mut settings: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("tokenizer/tokenizer_config.json")).unwrap())
            .unwrap();
    for key in ["chat_template", "bos_token", "eos_token"] {
        settings[key] = fixture[key].clone();
    }
    let config =
        ModelConfig::from_json(&std::fs::read_to_string(fixtures().join("llama/base/config.json")).unwrap()).unwrap();
    TextTokenizer::from_parts(&bytes, Some(&settings), &config).unwrap()
}

fn fixture(model: &str) -> Value {
    let path = fixtures().join(format!("chat_templates/{model}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn renders_like_transformers(model: &str) {
    let fixture = fixture(model);
    let tokenizer = tokenizer(&fixture);
    let cases = fixture["cases"].as_array().unwrap();
    for (i, case) in cases.iter().enumerate() {
        let messages = case["messages"].as_array().unwrap();
        let generation_prompt = case["add_generation_prompt"].as_bool().unwrap();
        let rendered = render_chat(&tokenizer, messages, generation_prompt);
        match (&case["expected"], &case["error"]) {
            (Value::String(expected), _) => {
                assert_eq!(rendered.as_ref().unwrap(), expected, "{model} case {i}: {messages:?}")
            }
            (_, Value::String(error)) => {
                let e = rendered.expect_err("transformers rejected this conversation");
                assert!(e.message.contains(error.as_str()), "{model} case {i}: {e}");
            }
            _ => panic!("{model} case {i} has neither expected text nor error"),
        }
    }
    println!("{model}: {} conversations render as transformers renders them", cases.len());
}

#[test]
fn qwen3_template_renders_like_transformers() {
    renders_like_transformers("qwen3");
}

#[test]
fn gemma3_template_renders_like_transformers() {
    renders_like_transformers("gemma3");
}

/// A chat row for training is the same text: a prompt and its answer, rendered once.
#[test]
fn chat_rows_train_on_the_rendered_text() {
    for model in ["qwen3", "gemma3"] {
        let fixture = fixture(model);
        let tokenizer = tokenizer(&fixture);
        let case = &fixture["cases"][2];
        assert_eq!(case["messages"].as_array().unwrap().len(), 2, "{model}: case 2 is one user turn and its answer");
        let row = format!("{}\n", json!({ "messages": case["messages"] }));
        let options = DataOptions { max_len: 1024, template: None, skip_bad_rows: false };
        let rows = preview("chat.jsonl", row.as_bytes(), &tokenizer, &options, 1).unwrap();
        assert_eq!(rows[0].error, None, "{model}");
        let text: String = rows[0].segments.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(text, case["expected"].as_str().unwrap(), "{model}");
    }
}
