//! Datasets: the fixture batches transformers + PEFT trained on are reproduced exactly, every file
//! format gives the same examples, bad rows are reported by line, and chat / instruction rows are
//! templated with loss on the response only. No GPU needed.

mod common;

use common::*;
use serde_json::{Value, json};
use webtune::ErrorCode;
use webtune::data::{
    Batch, DEFAULT_INSTRUCTION_TEMPLATE, DataOptions, Dataset, Example, IGNORE_INDEX, PreviewSegment, load_dataset,
    preview, split_eval,
};
use webtune::model::{ModelConfig, TextTokenizer};

fn model_config(vocab_size: usize) -> ModelConfig {
    let text = std::fs::read_to_string(fixtures().join("llama/base/config.json")).unwrap();
    let mut config: Value = serde_json::from_str(&text).unwrap();
    config["vocab_size"] = json!(vocab_size);
    ModelConfig::from_json(&config.to_string()).unwrap()
}

fn tokenizer_settings() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("tokenizer/tokenizer_config.json")).unwrap()).unwrap()
}

/// The fixture tokenizer, as PEFT used it.
fn tokenizer() -> TextTokenizer {
    let bytes = std::fs::read(fixtures().join("tokenizer/tokenizer.json")).unwrap();
    TextTokenizer::from_parts(&bytes, Some(&tokenizer_settings()), &model_config(512)).unwrap()
}

/// The fixture tokenizer plus ChatML's special tokens (ids 512, 513) and `chat_template`.
fn chat_tokenizer(chat_template: &str) -> TextTokenizer {
    let text = std::fs::read_to_string(fixtures().join("tokenizer/tokenizer.json")).unwrap();
    let mut tokenizer: Value = serde_json::from_str(&text).unwrap();
    for (id, content) in [(512, "<|im_start|>"), (513, "<|im_end|>")] {
        tokenizer["added_tokens"].as_array_mut().unwrap().push(json!({
            "id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
            "normalized": false, "special": true
        }));
    }
    let mut settings = tokenizer_settings();
    settings["chat_template"] = json!(chat_template);
    settings["eos_token"] = json!("<|im_end|>");
    TextTokenizer::from_parts(tokenizer.to_string().as_bytes(), Some(&settings), &model_config(514)).unwrap()
}

const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

fn options(max_len: usize) -> DataOptions {
    DataOptions { max_len, template: None, skip_bad_rows: false }
}

fn skipping(max_len: usize) -> DataOptions {
    DataOptions { skip_bad_rows: true, ..options(max_len) }
}

fn load(file_name: &str, text: &str, tokenizer: &TextTokenizer, options: &DataOptions) -> Dataset {
    load_dataset(file_name, text.as_bytes(), tokenizer, options).unwrap_or_else(|e| panic!("{file_name}: {e}"))
}

fn load_error(file_name: &str, text: &str, tokenizer: &TextTokenizer, options: &DataOptions) -> webtune::Error {
    match load_dataset(file_name, text.as_bytes(), tokenizer, options) {
        Ok(_) => panic!("{file_name} loaded although it should not"),
        Err(e) => e,
    }
}

fn fixture_rows(name: &str) -> String {
    std::fs::read_to_string(fixtures().join("data").join(name)).unwrap()
}

fn ids_and_labels(examples: &[Example]) -> Vec<(Vec<u32>, Vec<i64>)> {
    examples.iter().map(|e| (e.input_ids.clone(), e.labels.clone())).collect()
}

fn lines(examples: &[Example]) -> Vec<usize> {
    examples.iter().map(|e| e.line).collect()
}

fn assert_batch_matches(batch: &Batch, reference: &std::collections::BTreeMap<String, RefTensor>, prefix: &str) {
    let ids = &reference[&format!("{prefix}.input_ids")];
    assert_eq!(ids.shape, vec![batch.batch, batch.len], "{prefix} shape");
    assert_eq!(batch.input_ids, ids.ids(), "{prefix}.input_ids");
    let mask: Vec<u8> = reference[&format!("{prefix}.attention_mask")].values.iter().map(|&v| v as u8).collect();
    assert_eq!(batch.attention_mask, mask, "{prefix}.attention_mask");
    let labels: Vec<i64> = reference[&format!("{prefix}.labels")].values.iter().map(|&v| v as i64).collect();
    assert_eq!(batch.labels, labels, "{prefix}.labels");
}

#[test]
fn fixture_batches_are_reproduced_exactly() {
    let tokenizer = tokenizer();
    let reference = read_reference(&fixtures().join("batches.safetensors"));
    let train = load("train.jsonl", &fixture_rows("train.jsonl"), &tokenizer, &options(128));
    assert_eq!(train.examples.len(), 64);
    assert_eq!(lines(&train.examples), (1..=64).collect::<Vec<_>>());
    for step in 0..20 {
        let rows: Vec<&Example> = (0..4).map(|j| &train.examples[(4 * step + j) % 64]).collect();
        assert_batch_matches(&Batch::collate(&rows, 1), &reference, &format!("step{step}"));
    }
    let eval = load("eval.jsonl", &fixture_rows("eval.jsonl"), &tokenizer, &options(128));
    assert_batch_matches(&Batch::collate(&eval.examples.iter().collect::<Vec<_>>(), 1), &reference, "eval");

    let report = &train.report;
    assert_eq!((report.rows, report.truncated, report.no_supervised_tokens), (64, 0, 0));
    assert!(report.bad_rows.is_empty());
    let lengths: Vec<usize> = train.examples.iter().map(|e| e.input_ids.len()).collect();
    assert_eq!(report.min_tokens, *lengths.iter().min().unwrap());
    assert_eq!(report.max_tokens, *lengths.iter().max().unwrap());
    assert!((report.mean_tokens - lengths.iter().sum::<usize>() as f64 / 64.0).abs() < 1e-12);
    let supervised: usize =
        train.examples.iter().map(|e| e.labels.iter().filter(|&&l| l != IGNORE_INDEX).count()).sum();
    assert_eq!(report.supervised_tokens, supervised);
}

fn first_rows(n: usize) -> Vec<Value> {
    fixture_rows("train.jsonl").lines().take(n).map(|line| serde_json::from_str(line).unwrap()).collect()
}

fn csv_text(rows: &[Value], columns: &[&str]) -> String {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(columns).unwrap();
    for row in rows {
        writer.write_record(columns.iter().map(|c| row[c].as_str().unwrap())).unwrap();
    }
    String::from_utf8(writer.into_inner().unwrap()).unwrap()
}

#[test]
fn every_format_gives_the_same_examples() {
    let tokenizer = tokenizer();
    let rows = first_rows(8);
    let jsonl: String = rows.iter().map(|row| format!("{row}\n")).collect();
    let from_jsonl = load("rows.jsonl", &jsonl, &tokenizer, &options(128));
    let from_ndjson = load("rows.NDJSON", &jsonl, &tokenizer, &options(128));
    let from_json = load("rows.json", &serde_json::to_string_pretty(&rows).unwrap(), &tokenizer, &options(128));
    let from_csv = load("rows.csv", &csv_text(&rows, &["prompt", "completion"]), &tokenizer, &options(128));
    for other in [&from_ndjson, &from_json, &from_csv] {
        assert_eq!(ids_and_labels(&other.examples), ids_and_labels(&from_jsonl.examples));
    }
    // Pretty-printed, each object takes 4 lines after the opening bracket; CSV has a header row.
    assert_eq!(lines(&from_json.examples), (0..8).map(|i| 2 + 4 * i).collect::<Vec<_>>());
    assert_eq!(lines(&from_csv.examples), (2..=9).collect::<Vec<_>>());

    // Plain text: one text row per paragraph, lines kept.
    let texts = ["Reverse: daczsb -> bszcad", "first line\nsecond line", "last"];
    let text_rows: String = texts.iter().map(|t| format!("{}\n", json!({ "text": t }))).collect();
    let from_text_rows = load("text.jsonl", &text_rows, &tokenizer, &options(128));
    let from_txt =
        load("text.txt", &format!("\n{}\n\n\n{}\n", texts[..2].join("\n\n"), texts[2]), &tokenizer, &options(128));
    assert_eq!(ids_and_labels(&from_txt.examples), ids_and_labels(&from_text_rows.examples));
    assert_eq!(lines(&from_txt.examples), vec![2, 4, 8]);
    // Text rows are supervised throughout and end with EOS.
    let example = &from_txt.examples[0];
    assert_eq!(example.input_ids, [tokenizer.encode(texts[0], true).unwrap(), vec![0]].concat());
    assert_eq!(example.labels, example.input_ids.iter().map(|&id| id as i64).collect::<Vec<_>>());

    let e = load_error("rows.parquet", &jsonl, &tokenizer, &options(128));
    assert_eq!(e.code, ErrorCode::InvalidDataset);
    assert!(e.message.starts_with("rows.parquet: unsupported dataset format; use .jsonl"), "{e}");
}

const BAD_ROWS: &str = r#"{"prompt": "Reverse: abc ->", "completion": " cba"}
{"prompt": "Reverse: abd ->", "completion": " dba"
{"prompt": "Reverse: abe ->", "completion": " eba"}
{"question": "Reverse: abf ->", "answer": " fba"}

{"prompt": "Reverse: abg ->", "completion": ""}
{"prompt": "Reverse: abh ->", "completion": 7}
{"prompt": "Reverse: abi ->", "completion": " iba"}
"#;

#[test]
fn bad_rows_are_reported_by_line_or_skipped() {
    let tokenizer = tokenizer();
    let e = load_error("bad.jsonl", BAD_ROWS, &tokenizer, &options(128));
    assert_eq!(e.code, ErrorCode::InvalidDataset);
    assert!(e.message.starts_with("bad.jsonl:2: invalid JSON: EOF while parsing an object"), "{e}");

    let dataset = load("bad.jsonl", BAD_ROWS, &tokenizer, &skipping(128));
    assert_eq!(lines(&dataset.examples), vec![1, 3, 8]);
    assert_eq!(dataset.report.rows, 3);
    let bad: Vec<(usize, &str)> = dataset.report.bad_rows.iter().map(|r| (r.line, r.reason.as_str())).collect();
    assert_eq!(bad.iter().map(|b| b.0).collect::<Vec<_>>(), vec![2, 4, 6, 7]);
    assert!(bad[1].1.starts_with("no recognised set of fields: found fields \"answer\", \"question\"; expected one of \"text\"; \"prompt\" + \"completion\""), "{}", bad[1].1);
    assert_eq!(bad[2].1, "field \"completion\" is empty");
    assert_eq!(bad[3].1, "field \"completion\" must be a string, found a number");

    // Without skipping, each bad row is the error in turn.
    let without = |line: usize| {
        BAD_ROWS.lines().enumerate().filter(|(i, _)| *i + 1 != line).map(|(_, l)| format!("{l}\n")).collect::<String>()
    };
    let e = load_error("bad.jsonl", &without(2), &tokenizer, &options(128));
    assert!(e.message.starts_with("bad.jsonl:3: no recognised set of fields"), "{e}");

    // The same problems in a JSON array point at the line where the object starts.
    let array = "[\n  {\"prompt\": \"a\", \"completion\": \" b\"},\n  {\n    \"prompt\": \"c\",\n    \"completion\": \"\"\n  },\n  \"text\"\n]";
    let dataset = load("bad.json", array, &tokenizer, &skipping(128));
    let bad: Vec<(usize, &str)> = dataset.report.bad_rows.iter().map(|r| (r.line, r.reason.as_str())).collect();
    assert_eq!(
        bad,
        vec![(3, "field \"completion\" is empty"), (7, "expected a JSON object with the row's fields, found a string")]
    );
    let e = load_error("bad.json", array, &tokenizer, &options(128));
    assert_eq!(e.message, "bad.json:3: field \"completion\" is empty");

    // A CSV record with a missing column.
    let e = load_error("bad.csv", "prompt,completion\na,b\nc\n", &tokenizer, &options(128));
    assert_eq!(e.message, "bad.csv:3: the record has 1 fields but the header row has 2");

    // Nothing usable is an error even when skipping.
    let e = load_error("bad.jsonl", "{\"prompt\": \"a\"}\n[1]\n", &tokenizer, &skipping(128));
    assert!(
        e.message.starts_with("bad.jsonl: no usable rows: 2 malformed (first, line 1: no recognised set of fields"),
        "{e}"
    );
    let e = load_error("empty.jsonl", "\n\n", &tokenizer, &skipping(128));
    assert_eq!(e.message, "empty.jsonl: the file holds no rows");

    // The preview lists bad rows with their reasons and splits good ones into supervised parts.
    let rows = preview("bad.jsonl", BAD_ROWS.as_bytes(), &tokenizer, &options(128), 4).unwrap();
    assert_eq!(rows.iter().map(|r| r.line).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    assert_eq!(
        rows[0].segments,
        vec![
            PreviewSegment { text: "Reverse: abc ->".into(), supervised: false },
            PreviewSegment { text: " cba<|endoftext|>".into(), supervised: true },
        ]
    );
    let tokens =
        tokenizer.encode("Reverse: abc ->", true).unwrap().len() + tokenizer.encode(" cba", false).unwrap().len() + 1;
    assert_eq!((rows[0].tokens, rows[0].truncated, rows[0].error.as_deref()), (tokens, false, None));
    assert!(rows[1].segments.is_empty() && rows[1].error.as_deref().unwrap().starts_with("invalid JSON"));
    assert!(rows[3].error.as_deref().unwrap().starts_with("no recognised set of fields"));
}

#[test]
fn truncation_keeps_the_first_tokens_and_counts_rows() {
    let tokenizer = tokenizer();
    let rows = fixture_rows("train.jsonl");
    let full = load("train.jsonl", &rows, &tokenizer, &options(128)).examples;
    for max_len in [12, 7] {
        let dataset = load("train.jsonl", &rows, &tokenizer, &options(max_len));
        let longer = full.iter().filter(|e| e.input_ids.len() > max_len).count();
        let prompt_only =
            full.iter().filter(|e| e.labels[..max_len.min(e.labels.len())].iter().all(|&l| l == IGNORE_INDEX)).count();
        assert!(longer > 0);
        assert_eq!(dataset.report.truncated, longer, "max_len {max_len}");
        assert_eq!(dataset.report.no_supervised_tokens, prompt_only, "max_len {max_len}");
        assert_eq!(dataset.report.rows, 64 - prompt_only);
        assert_eq!(dataset.report.max_tokens, max_len);
        let kept = full.iter().filter(|e| e.labels[..max_len.min(e.labels.len())].iter().any(|&l| l != IGNORE_INDEX));
        for (truncated, original) in dataset.examples.iter().zip(kept) {
            let len = original.input_ids.len().min(max_len);
            assert_eq!(truncated.input_ids, original.input_ids[..len]);
            assert_eq!(truncated.labels, original.labels[..len]);
        }
    }
    // max_len 7 leaves some rows with only their prompt; the preview says so.
    assert!(load("train.jsonl", &rows, &tokenizer, &options(7)).report.no_supervised_tokens > 0);
    let previews = preview("train.jsonl", rows.as_bytes(), &tokenizer, &options(7), 64).unwrap();
    let dropped = previews.iter().find(|r| r.error.is_some()).unwrap();
    assert!(dropped.truncated && dropped.segments.iter().all(|s| !s.supervised));
    assert_eq!(
        dropped.error.as_deref().unwrap(),
        "no supervised token left after truncation to 7 tokens; the row is skipped"
    );

    let e = load_error("train.jsonl", &rows, &tokenizer, &options(0));
    assert_eq!(e.code, ErrorCode::InvalidOptions);
}

/// What a prompt/completion row with this prompt gives, to compare templated rows against.
fn prompt_completion(tokenizer: &TextTokenizer, prompt: &str, completion: &str) -> (Vec<u32>, Vec<i64>) {
    let row = json!({ "prompt": prompt, "completion": completion });
    let example = load("pc.jsonl", &row.to_string(), tokenizer, &options(512)).examples.remove(0);
    (example.input_ids, example.labels)
}

#[test]
fn instruction_rows_use_the_alpaca_or_a_custom_template() {
    let tokenizer = tokenizer();
    let rows = [
        json!({ "instruction": "Reverse the word.", "input": "abc", "output": " cba" }),
        json!({ "instruction": "Say hi.", "output": "hi", "source": "manual" }),
        json!({ "instruction": "Say bye.", "input": null, "output": "bye", "source": "manual" }),
    ];
    let jsonl: String = rows.iter().map(|row| format!("{row}\n")).collect();
    let dataset = load("alpaca.jsonl", &jsonl, &tokenizer, &options(512));
    let expected = [
        prompt_completion(
            &tokenizer,
            "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n### Instruction:\nReverse the word.\n\n### Input:\nabc\n\n### Response:\n",
            " cba",
        ),
        prompt_completion(
            &tokenizer,
            "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\nSay hi.\n\n### Response:\n",
            "hi",
        ),
    ];
    assert_eq!(ids_and_labels(&dataset.examples)[..2], expected);
    assert!(DEFAULT_INSTRUCTION_TEMPLATE.contains("### Response:"));

    // A custom template sees the row's other string fields too.
    let custom = DataOptions {
        template: Some("[{{ source }}] {{ instruction }}{% if input %} {{ input }}{% endif %}\n".into()),
        ..options(512)
    };
    let dataset = load("custom.jsonl", &jsonl[jsonl.find('\n').unwrap() + 1..], &tokenizer, &custom);
    assert_eq!(
        ids_and_labels(&dataset.examples),
        vec![
            prompt_completion(&tokenizer, "[manual] Say hi.\n", "hi"),
            prompt_completion(&tokenizer, "[manual] Say bye.\n", "bye")
        ]
    );

    // A variable the row lacks is a row error; a template that does not parse stops loading.
    let e = load_error("alpaca.jsonl", &jsonl, &tokenizer, &custom);
    assert!(e.message.starts_with("alpaca.jsonl:1: the instruction template failed: undefined value"), "{e}");
    let broken = DataOptions { template: Some("{% if instruction %}".into()), ..skipping(512) };
    let e = load_error("alpaca.jsonl", &jsonl, &tokenizer, &broken);
    assert_eq!(e.code, ErrorCode::InvalidOptions);
    assert!(e.message.starts_with("the instruction template could not be parsed"), "{e}");
}

/// Abridged from Llama 3.2's chat template.
const LLAMA_3_STYLE: &str = r#"{{- bos_token }}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"#;

fn conversation(messages: &[(&str, &str)]) -> String {
    let messages: Vec<Value> =
        messages.iter().map(|(role, content)| json!({ "role": role, "content": content })).collect();
    format!("{}\n", json!({ "messages": messages }))
}

fn segments(parts: &[(&str, bool)]) -> Vec<PreviewSegment> {
    parts.iter().map(|&(text, supervised)| PreviewSegment { text: text.into(), supervised }).collect()
}

#[test]
fn chat_rows_supervise_assistant_turns_only() {
    let tokenizer = chat_tokenizer(CHATML);
    let row = conversation(&[
        ("system", "You reverse words."),
        ("user", "abc"),
        ("assistant", "cba"),
        ("user", "Now xyz, please"),
        ("assistant", "zyx"),
    ]);
    let rows = preview("chat.jsonl", row.as_bytes(), &tokenizer, &options(512), 10).unwrap();
    assert_eq!(
        rows[0].segments,
        segments(&[
            (
                "<|im_start|>system\nYou reverse words.<|im_end|>\n<|im_start|>user\nabc<|im_end|>\n<|im_start|>assistant\n",
                false
            ),
            ("cba<|im_end|>", true),
            ("\n<|im_start|>user\nNow xyz, please<|im_end|>\n<|im_start|>assistant\n", false),
            ("zyx<|im_end|>", true),
            ("\n", false),
        ])
    );
    // The rendering is tokenised once, without extra special tokens and without an added EOS.
    let example = load("chat.jsonl", &row, &tokenizer, &options(512)).examples.remove(0);
    let text: String = rows[0].segments.iter().map(|s| s.text.as_str()).collect();
    assert_eq!(example.input_ids, tokenizer.encode(&text, false).unwrap());
    assert_eq!(example.input_ids.iter().filter(|&&id| id == 513).count(), 5);
    for (id, label) in example.input_ids.iter().zip(&example.labels) {
        assert!(*label == IGNORE_INDEX || *label == *id as i64);
    }

    // A Llama 3.2 style template: whitespace control, BOS from tokenizer_config.json, today's date
    // from strftime_now, the system message sliced off and a default system block.
    let llama = chat_tokenizer(LLAMA_3_STYLE);
    let rows = preview(
        "chat.jsonl",
        conversation(&[("user", "abc "), ("assistant", "cba")]).as_bytes(),
        &llama,
        &options(512),
        1,
    )
    .unwrap();
    let [prompt, reply] = &rows[0].segments[..] else { panic!("{:?}", rows[0].segments) };
    assert!(!prompt.supervised && reply.supervised);
    let date = prompt.text.split("Today Date: ").nth(1).unwrap().split('\n').next().unwrap();
    assert!(date.len() == 11 && date != "26 Jul 2024", "{date}");
    assert!(prompt.text.starts_with("<|endoftext|><|start_header_id|>system<|end_header_id|>\n\nToday Date: "));
    assert!(prompt.text.ends_with(&format!("{date}\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nabc<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")));
    assert_eq!(reply.text, "cba<|eot_id|>");

    // Python string methods work, as in Hugging Face templates.
    let stripping = chat_tokenizer(&CHATML.replace("message['content']", "message['content'].strip()"));
    let padded = conversation(&[("user", "  abc "), ("assistant", " cba\n")]);
    let rows = preview("chat.jsonl", padded.as_bytes(), &stripping, &options(512), 1).unwrap();
    assert_eq!(
        rows[0].segments,
        segments(&[
            ("<|im_start|>user\nabc<|im_end|>\n<|im_start|>assistant\n", false),
            ("cba<|im_end|>", true),
            ("\n", false)
        ])
    );
}

#[test]
fn chat_rows_report_template_and_message_problems() {
    let chatml = chat_tokenizer(CHATML);
    let cases = [
        (
            json!({ "messages": "hi" }).to_string(),
            "field \"messages\" must be a list of {\"role\", \"content\"} objects, found a string",
        ),
        (json!({ "messages": [{ "role": "user" }] }).to_string(), "message 1 has no \"content\""),
        (
            json!({ "messages": [{ "role": "user", "content": ["x"] }] }).to_string(),
            "message 1: \"content\" must be a string, found a list",
        ),
        (
            conversation(&[("user", "abc")]),
            "the conversation has no \"assistant\" message, so there is nothing to learn",
        ),
        (
            conversation(&[("assistant", "abc")]),
            "the conversation starts with an \"assistant\" message; start it with a \"system\" or \"user\" message",
        ),
    ];
    for (row, reason) in &cases {
        let e = load_error(
            "chat.jsonl",
            &format!("{}{row}", conversation(&[("user", "a"), ("assistant", "b")])),
            &chatml,
            &options(512),
        );
        assert_eq!(e.message, format!("chat.jsonl:2: {reason}"));
    }

    // raise_exception shows the template's message.
    let strict = chat_tokenizer(&format!(
        "{{% for message in messages %}}{{% if message['role'] not in ['system', 'user', 'assistant'] %}}{{{{ raise_exception('Unknown role: ' + message['role']) }}}}{{% endif %}}{{% endfor %}}{CHATML}"
    ));
    let e = load_error(
        "chat.jsonl",
        &conversation(&[("user", "a"), ("tool", "x"), ("assistant", "b")]),
        &strict,
        &options(512),
    );
    assert_eq!(e.message, "chat.jsonl:1: the chat template rejected this row: Unknown role: tool");

    // A template whose output for a conversation is not extended by the next turn.
    let counting = chat_tokenizer(&format!("{{{{ messages|length }}}}{CHATML}"));
    let e = load_error("chat.jsonl", &conversation(&[("user", "a"), ("assistant", "b")]), &counting, &options(512));
    assert!(
        e.message.starts_with("chat.jsonl:1: the chat template is not prefix-stable: its rendering of the first 2 messages does not start with its rendering of the first message plus the assistant prompt"),
        "{e}"
    );

    // No chat template: the tokenizer's problem, not the row's, so skipping does not hide it.
    let e = load_error("chat.jsonl", &conversation(&[("user", "a"), ("assistant", "b")]), &tokenizer(), &skipping(512));
    assert_eq!(e.code, ErrorCode::InvalidTokenizer);
    assert!(e.message.contains("tokenizer_config.json has no chat_template"), "{e}");
}

#[test]
fn eval_split_is_seeded_and_deterministic() {
    let tokenizer = tokenizer();
    let examples = load("train.jsonl", &fixture_rows("train.jsonl"), &tokenizer, &options(128)).examples;
    let (train, eval) = split_eval(examples.clone(), 0.1, 42);
    assert_eq!((train.len(), eval.len()), (58, 6));
    assert_eq!(split_eval(examples.clone(), 0.1, 42), (train.clone(), eval.clone()));
    assert_ne!(lines(&split_eval(examples.clone(), 0.1, 43).1), lines(&eval));
    let mut all = [lines(&train), lines(&eval)].concat();
    all.sort();
    assert_eq!(all, (1..=64).collect::<Vec<_>>());
    // Pinned so the page (wasm) and the CLI pick the same rows.
    assert_eq!(lines(&eval), vec![4, 22, 32, 45, 48, 64]);
}
