//! Loss on assistant turns as TRL (`assistant_only_loss`) and transformers
//! (`return_assistant_tokens_mask`) define it: each assistant turn's content and its end-of-turn
//! token, nothing after it. Checked against transformers' own masks (`fixtures/chat_masks/`) for a
//! ChatML template with `{% generation %}` tags and without, and on the end-of-turn tokens of other
//! template families. No GPU needed.

mod common;

use common::*;
use serde_json::{Value, json};
use webtune::data::{DataOptions, IGNORE_INDEX, PreviewSegment, load_dataset, preview};
use webtune::model::{ModelConfig, TextTokenizer};

fn model_config(vocab_size: usize) -> ModelConfig {
    let text = std::fs::read_to_string(fixtures().join("llama/base/config.json")).unwrap();
    let mut config: Value = serde_json::from_str(&text).unwrap();
    config["vocab_size"] = json!(vocab_size);
    ModelConfig::from_json(&config.to_string()).unwrap()
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("chat_masks/expected.json")).unwrap()).unwrap()
}

/// The fixture tokenizer with `special` added as special tokens (ids from 512 on) and `settings`
/// over the fixture's `tokenizer_config.json`.
fn tokenizer_with(special: &[&str], settings: Value) -> TextTokenizer {
    let text = std::fs::read_to_string(fixtures().join("tokenizer/tokenizer.json")).unwrap();
    let mut tokenizer: Value = serde_json::from_str(&text).unwrap();
    for (i, content) in special.iter().enumerate() {
        tokenizer["added_tokens"].as_array_mut().unwrap().push(json!({
            "id": 512 + i, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
            "normalized": false, "special": true
        }));
    }
    let config_text = std::fs::read_to_string(fixtures().join("tokenizer/tokenizer_config.json")).unwrap();
    let mut config: Value = serde_json::from_str(&config_text).unwrap();
    config.as_object_mut().unwrap().extend(settings.as_object().unwrap().clone());
    TextTokenizer::from_parts(tokenizer.to_string().as_bytes(), Some(&config), &model_config(512 + special.len()))
        .unwrap()
}

fn options() -> DataOptions {
    DataOptions { max_len: 1024, template: None, skip_bad_rows: false }
}

fn row(messages: &Value) -> String {
    format!("{}\n", json!({ "messages": messages }))
}

/// The preview of one conversation: (text, supervised) runs.
fn runs(tokenizer: &TextTokenizer, messages: &Value) -> Vec<(String, bool)> {
    let rows = preview("chat.jsonl", row(messages).as_bytes(), tokenizer, &options(), 1).unwrap();
    assert_eq!(rows[0].error, None);
    rows[0].segments.iter().map(|PreviewSegment { text, supervised }| (text.clone(), *supervised)).collect()
}

fn supervised(runs: &[(String, bool)]) -> Vec<&str> {
    runs.iter().filter(|run| run.1).map(|run| run.0.as_str()).collect()
}

fn messages(turns: &[(&str, &str)]) -> Value {
    turns.iter().map(|(role, content)| json!({ "role": role, "content": content })).collect()
}

#[test]
fn masks_equal_transformers_with_and_without_generation_tags() {
    let expected = expected();
    let fixture_tokenizer = std::fs::read(fixtures().join("chat_masks/tokenizer.json")).unwrap();
    for template in ["template_with_generation_tags", "template_plain"] {
        let settings = json!({ "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
                               "chat_template": expected[template] });
        let tokenizer = TextTokenizer::from_parts(&fixture_tokenizer, Some(&settings), &model_config(514)).unwrap();
        for (index, case) in expected["conversations"].as_array().unwrap().iter().enumerate() {
            let what = format!("{template}, conversation {index}");
            let text = row(&case["messages"]);
            let example =
                load_dataset("chat.jsonl", text.as_bytes(), &tokenizer, &options()).unwrap().examples.remove(0);
            let ids: Vec<u32> =
                case["input_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
            assert_eq!(example.input_ids, ids, "{what}: input_ids");
            let mask: Vec<bool> = case["assistant_mask"].as_array().unwrap().iter().map(|v| v == 1).collect();
            let labels: Vec<i64> =
                ids.iter().zip(&mask).map(|(&id, &m)| if m { i64::from(id) } else { IGNORE_INDEX }).collect();
            assert_eq!(example.labels, labels, "{what}: labels");

            // The page highlights the preview's supervised segments: exactly these tokens, each
            // run of them decoded as one piece.
            let tokens: Vec<&str> =
                case["supervised_text"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
            let mut expected_runs = Vec::new();
            let mut token = tokens.iter();
            for run in mask.chunk_by(|a, b| a == b).filter(|run| run[0]) {
                expected_runs.push(token.by_ref().take(run.len()).copied().collect::<String>());
            }
            let runs = runs(&tokenizer, &case["messages"]);
            assert_eq!(supervised(&runs), expected_runs, "{what}: preview");
            let all: String = runs.iter().map(|run| run.0.as_str()).collect();
            assert_eq!(all, tokenizer.decode(&ids, false).unwrap(), "{what}: preview text");
        }
    }
}

/// Abridged from Llama 3's chat template.
const LLAMA_3: &str = "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

/// Abridged from Gemma's chat template: the assistant is "model", turns end `<end_of_turn>\n`.
const GEMMA: &str = "{{ bos_token }}{% for message in messages %}{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}";

/// Abridged from Qwen3's chat template: the final assistant turn gets a `<think>` block (its
/// reasoning, or an empty one), earlier ones lose theirs.
const QWEN3: &str = "{% set ns = namespace(last_query=0) %}{% for message in messages %}{% if message['role'] == 'user' %}{% set ns.last_query = loop.index0 %}{% endif %}{% endfor %}{% for message in messages %}{% if message['role'] == 'assistant' %}{% set content = message['content'] %}{% set reasoning = '' %}{% if '</think>' in content %}{% set reasoning = content.split('</think>')[0].split('<think>')[-1].strip('\n') %}{% set content = content.split('</think>')[-1].lstrip('\n') %}{% endif %}{{ '<|im_start|>assistant\n' }}{% if loop.index0 > ns.last_query %}{{ '<think>\n' + reasoning + '\n</think>\n\n' }}{% endif %}{{ content + '<|im_end|>\n' }}{% else %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

#[test]
fn end_of_turn_tokens_of_other_templates() {
    let conversation = messages(&[("user", "abc"), ("assistant", "cba"), ("user", "xyz"), ("assistant", "zyx")]);

    let llama = tokenizer_with(
        &["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        json!({ "chat_template": LLAMA_3, "eos_token": "<|eot_id|>" }),
    );
    assert_eq!(supervised(&runs(&llama, &conversation)), ["cba<|eot_id|>", "zyx<|eot_id|>"]);

    // Gemma: the `\n` after `<end_of_turn>` is a separator, not part of the turn.
    let gemma = tokenizer_with(&["<start_of_turn>", "<end_of_turn>"], json!({ "chat_template": GEMMA }));
    let gemma_runs = runs(&gemma, &conversation);
    assert_eq!(supervised(&gemma_runs), ["cba<end_of_turn>", "zyx<end_of_turn>"]);
    assert_eq!(gemma_runs[2], ("\n<start_of_turn>user\nxyz<end_of_turn>\n<start_of_turn>model\n".to_owned(), false));

    // EOS written by the template (Llama 2 / Mistral style), whatever the tokenizer's specials.
    let mistral = tokenizer_with(
        &[],
        json!({ "chat_template": "{% for m in messages %}{% if m['role'] == 'user' %}{{ '[INST] ' + m['content'] + ' [/INST]' }}{% else %}{{ ' ' + m['content'] + eos_token + '\n' }}{% endif %}{% endfor %}" }),
    );
    assert_eq!(supervised(&runs(&mistral, &conversation)), [" cba<|endoftext|>", " zyx<|endoftext|>"]);

    // A template without any special token: its turn separator is the only way to stop, so the
    // whole turn is learnt. A token that straddles the turn's start (" c" after "assistant:")
    // belongs to it, as with transformers' `char_to_token`.
    let plain = tokenizer_with(
        &[],
        json!({ "chat_template": "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n\n' }}{% endfor %}{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}" }),
    );
    assert_eq!(supervised(&runs(&plain, &conversation)), [" cba\n\n", "zyx\n\n"]);

    // Qwen3: the think block of the final turn is what the model writes after the prompt.
    let qwen3 = tokenizer_with(&["<|im_start|>", "<|im_end|>"], json!({ "chat_template": QWEN3 }));
    let single = messages(&[("user", "abc"), ("assistant", "<think>\nreverse it\n</think>\n\ncba")]);
    assert_eq!(supervised(&runs(&qwen3, &single)), ["<think>\nreverse it\n</think>\n\ncba<|im_end|>"]);
    let no_reasoning = messages(&[("user", "abc"), ("assistant", "cba")]);
    assert_eq!(supervised(&runs(&qwen3, &no_reasoning)), ["<think>\n\n</think>\n\ncba<|im_end|>"]);
    // Over several turns it drops earlier reasoning, so the turns cannot be found by rendering
    // prefixes; with generation tags (as TRL's Qwen3 training template has) they can.
    let rows = preview("chat.jsonl", row(&conversation).as_bytes(), &qwen3, &options(), 1).unwrap();
    let error = rows[0].error.as_deref().unwrap();
    assert!(error.contains("not prefix-stable") && error.contains("{% generation %}"), "{error}");
    let tagged = QWEN3
        .replace(
            "{{ '<|im_start|>assistant\n' }}{% if loop",
            "{{ '<|im_start|>assistant\n' }}{% generation %}{% if loop",
        )
        .replace("{{ content + '<|im_end|>\n' }}", "{{ content + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}");
    assert_ne!(tagged, QWEN3);
    let qwen3_tagged = tokenizer_with(&["<|im_start|>", "<|im_end|>"], json!({ "chat_template": tagged }));
    assert_eq!(
        supervised(&runs(&qwen3_tagged, &conversation)),
        ["cba<|im_end|>", "<think>\n\n</think>\n\nzyx<|im_end|>"]
    );
}

#[test]
fn generation_tags_are_exact_and_whitespace_control_is_kept() {
    // Tags around the content only: the end-of-turn token is then not learnt, as the tags say.
    let template = "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' }}{% if m['role'] == 'assistant' %}{% generation -%}\n   {{ m['content'] }}\n{%- endgeneration %}{% else %}{{ m['content'] }}{% endif %}{{ '<|im_end|>\n' }}{% endfor %}";
    let tokenizer = tokenizer_with(&["<|im_start|>", "<|im_end|>"], json!({ "chat_template": template }));
    // Message text that holds the characters markers could be made of changes nothing.
    let conversation =
        messages(&[("user", "a\u{F0000}\u{F0001}"), ("assistant", "cba"), ("user", "b"), ("assistant", "")]);
    let runs = runs(&tokenizer, &conversation);
    assert_eq!(supervised(&runs), ["cba"]);
    let text: String = runs.iter().map(|run| run.0.as_str()).collect();
    assert_eq!(
        text,
        "<|im_start|>user\na\u{F0000}\u{F0001}<|im_end|>\n<|im_start|>assistant\ncba<|im_end|>\n<|im_start|>user\nb<|im_end|>\n<|im_start|>assistant\n<|im_end|>\n"
    );
}
