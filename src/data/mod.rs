//! Datasets: parsing (JSONL, JSON array, CSV, plain text), prompt templates and chat templates,
//! tokenisation with label masks, truncation, and batching. Shared by the page and the CLI.

mod encode;
mod source;
mod split;
mod strftime;
mod template;

use encode::{Encoded, Rejection, RowEncoder};
pub use split::split_eval;
pub use template::DEFAULT_INSTRUCTION_TEMPLATE;

use crate::err;
use crate::error::{Error, Result};
use crate::model::TextTokenizer;

/// Label value of a position that is not supervised (prompt, padding), as in transformers.
pub const IGNORE_INDEX: i64 = -100;

/// One tokenised training example.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub input_ids: Vec<u32>,
    /// Same length as `input_ids`; the token id where supervised, [`IGNORE_INDEX`] elsewhere.
    pub labels: Vec<i64>,
    /// 1-based line (or row) of the source file the example came from.
    pub line: usize,
}

/// How rows are turned into text.
#[derive(Clone, Debug)]
pub struct DataOptions {
    /// Examples longer than this many tokens are truncated (and counted).
    pub max_len: usize,
    /// Jinja template for `{"instruction","input","output"}` rows, given `instruction`, `input`
    /// and the row's other string fields; `None` = [`DEFAULT_INSTRUCTION_TEMPLATE`] (Alpaca).
    pub template: Option<String>,
    /// Skip malformed rows (and report them) instead of failing on the first one.
    pub skip_bad_rows: bool,
}

/// A malformed row: where it is and why.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RowError {
    pub line: usize,
    pub reason: String,
}

/// What loading found, for the CLI summary and the page's dataset panel.
#[derive(Clone, Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DatasetReport {
    /// Usable examples.
    pub rows: usize,
    /// Rows skipped as malformed (only with `skip_bad_rows`).
    pub bad_rows: Vec<RowError>,
    /// Rows cut to `max_len` tokens (including any then dropped for lack of supervised tokens).
    pub truncated: usize,
    /// Rows left without any supervised token (e.g. all completion truncated away); skipped.
    pub no_supervised_tokens: usize,
    /// Example lengths in tokens, after truncation.
    pub min_tokens: usize,
    pub mean_tokens: f64,
    pub max_tokens: usize,
    /// Tokens with a label, over all examples.
    pub supervised_tokens: usize,
}

pub struct Dataset {
    pub examples: Vec<Example>,
    pub report: DatasetReport,
}

/// Parses and tokenises a dataset file. `file_name` picks the format by extension (`.jsonl`,
/// `.ndjson`, `.json`, `.csv`, `.txt`) and is used in error messages (`train.jsonl:12: ...`).
pub fn load_dataset(
    file_name: &str,
    bytes: &[u8],
    tokenizer: &TextTokenizer,
    options: &DataOptions,
) -> Result<Dataset> {
    let rows = source::read_rows(file_name, bytes)?;
    let encoder = RowEncoder::new(tokenizer, options)?;
    let mut examples = Vec::new();
    let mut report = DatasetReport::default();
    for row in &rows {
        match encoder.encode(row) {
            Ok(Encoded { example, truncated }) => {
                report.truncated += usize::from(truncated);
                if has_supervised_tokens(&example) {
                    examples.push(example);
                } else {
                    report.no_supervised_tokens += 1;
                }
            }
            Err(Rejection::Row(reason)) if options.skip_bad_rows => {
                report.bad_rows.push(RowError { line: row.line, reason })
            }
            Err(Rejection::Row(reason)) => return Err(err!(InvalidDataset, "{file_name}:{}: {reason}", row.line)),
            Err(Rejection::Fatal(e)) => return Err(e),
        }
    }
    if examples.is_empty() {
        return Err(no_usable_rows(file_name, rows.len(), &report, options.max_len));
    }
    let lengths = examples.iter().map(|e| e.input_ids.len());
    report.rows = examples.len();
    report.min_tokens = lengths.clone().min().unwrap_or(0);
    report.max_tokens = lengths.clone().max().unwrap_or(0);
    report.mean_tokens = lengths.sum::<usize>() as f64 / examples.len() as f64;
    report.supervised_tokens = examples.iter().map(|e| e.labels.iter().filter(|&&l| l != IGNORE_INDEX).count()).sum();
    Ok(Dataset { examples, report })
}

fn has_supervised_tokens(example: &Example) -> bool {
    example.labels.iter().any(|&label| label != IGNORE_INDEX)
}

fn no_usable_rows(file_name: &str, row_count: usize, report: &DatasetReport, max_len: usize) -> Error {
    if row_count == 0 {
        return err!(InvalidDataset, "{file_name}: the file holds no rows");
    }
    let mut causes = Vec::new();
    if let Some(first) = report.bad_rows.first() {
        causes.push(format!("{} malformed (first, line {}: {})", report.bad_rows.len(), first.line, first.reason));
    }
    if report.no_supervised_tokens > 0 {
        causes.push(format!(
            "{} left with no supervised token after truncation to {max_len} tokens (raise the maximum length)",
            report.no_supervised_tokens
        ));
    }
    err!(InvalidDataset, "{file_name}: no usable rows: {}", causes.join("; "))
}

/// One row as the page previews it: the text the model sees, cut into the parts it learns to
/// write (supervised) and the parts it is only shown.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PreviewRow {
    pub line: usize,
    pub segments: Vec<PreviewSegment>,
    /// Length in tokens, after truncation.
    pub tokens: usize,
    pub truncated: bool,
    /// Why the row will not be used (malformed, or nothing left to learn after truncation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PreviewSegment {
    pub text: String,
    pub supervised: bool,
}

/// The text that asks the model to answer `user_text` in a chat: a single user turn rendered with
/// the model's chat template and its assistant generation prompt.
pub fn chat_prompt(tokenizer: &TextTokenizer, user_text: &str) -> Result<String> {
    render_chat(tokenizer, &[serde_json::json!({"role": "user", "content": user_text})], true)
}

/// A conversation (`{"role", "content"}` messages) rendered with the model's chat template, as
/// transformers' `apply_chat_template(..., tokenize=False)` renders it.
pub fn render_chat(
    tokenizer: &TextTokenizer,
    messages: &[serde_json::Value],
    add_generation_prompt: bool,
) -> Result<String> {
    template::ChatTemplate::new(tokenizer)?
        .render(messages, add_generation_prompt)
        .map_err(|e| crate::err!(InvalidTokenizer, "the chat template failed: {e}"))
}

/// The first `max_rows` rows of a dataset file as the model will see them, malformed rows
/// included with their reason. Errors only for what would stop [`load_dataset`] whatever the rows
/// (unreadable file, broken template or tokenizer).
pub fn preview(
    file_name: &str,
    bytes: &[u8],
    tokenizer: &TextTokenizer,
    options: &DataOptions,
    max_rows: usize,
) -> Result<Vec<PreviewRow>> {
    let rows = source::read_rows(file_name, bytes)?;
    let encoder = RowEncoder::new(tokenizer, options)?;
    rows.iter()
        .take(max_rows)
        .map(|row| match encoder.encode(row) {
            Ok(Encoded { example, truncated }) => Ok(PreviewRow {
                line: row.line,
                segments: segments(&example, tokenizer)?,
                tokens: example.input_ids.len(),
                truncated,
                error: (!has_supervised_tokens(&example)).then(|| {
                    format!(
                        "no supervised token left after truncation to {} tokens; the row is skipped",
                        options.max_len
                    )
                }),
            }),
            Err(Rejection::Row(reason)) => Ok(PreviewRow {
                line: row.line,
                segments: Vec::new(),
                tokens: 0,
                truncated: false,
                error: Some(reason),
            }),
            Err(Rejection::Fatal(e)) => Err(e),
        })
        .collect()
}

/// The example's text, cut where supervision starts or stops. Each cut is found by decoding the
/// tokens up to it, which keeps the spaces that decoding a run alone can drop (SentencePiece);
/// where a character straddles a cut, the run is decoded alone.
fn segments(example: &Example, tokenizer: &TextTokenizer) -> Result<Vec<PreviewSegment>> {
    let mut segments = Vec::new();
    let (mut start, mut decoded_before) = (0, String::new());
    for run in example.labels.chunk_by(|a, b| (*a == IGNORE_INDEX) == (*b == IGNORE_INDEX)) {
        let end = start + run.len();
        let decoded = tokenizer.decode(&example.input_ids[..end], false)?;
        let text = match decoded.strip_prefix(decoded_before.as_str()) {
            Some(text) => text.to_owned(),
            None => tokenizer.decode(&example.input_ids[start..end], false)?,
        };
        segments.push(PreviewSegment { text, supervised: run[0] != IGNORE_INDEX });
        (start, decoded_before) = (end, decoded);
    }
    Ok(segments)
}

/// The length a batch is padded to when its longest example has `longest` tokens and the run's
/// longest has `run_longest`: `longest` rounded up to a multiple of 8 tokens (up to 64), of 16
/// (up to 128) or of 32 (beyond), but not past `run_longest` rounded up to 8. A GPU compiles
/// pipelines per tensor shape (seconds each in a browser), so a run meets at most 24 lengths
/// instead of one per distinct example length. Multiples of 8 keep kernels vectorised: padding
/// every batch of the demo run to 17 tokens made its steps 30% slower in SwiftShader than
/// padding to 16 or 24. Padding changes no loss or gradient: padded positions are masked keys
/// with label -100.
pub fn bucket_len(longest: usize, run_longest: usize) -> usize {
    let step = match longest {
        0..=64 => 8,
        65..=128 => 16,
        _ => 32,
    };
    let cap = run_longest.div_ceil(8) * 8;
    (longest.div_ceil(step) * step).min(cap).max(longest)
}

/// A right-padded batch, row-major `[batch, len]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub input_ids: Vec<u32>,
    pub attention_mask: Vec<u8>,
    pub labels: Vec<i64>,
    pub batch: usize,
    pub len: usize,
}

impl Batch {
    /// Right-pads examples to the longest one: pad id, attention 0, label [`IGNORE_INDEX`]
    /// (transformers' `DataCollatorForSeq2Seq` without `pad_to_multiple_of`).
    pub fn collate(examples: &[&Example], pad_id: u32) -> Batch {
        let len = examples.iter().map(|e| e.input_ids.len()).max().unwrap_or(0);
        Self::collate_padded(examples, pad_id, examples.len(), len)
    }

    /// Pads to exactly `rows × len`: each example right-padded as in [`Batch::collate`], then
    /// rows of padding only (no attended token, no label) up to `rows`, so that a run's last,
    /// shorter batch has the shape of the others.
    pub fn collate_padded(examples: &[&Example], pad_id: u32, rows: usize, len: usize) -> Batch {
        assert!(examples.len() <= rows, "{} examples do not fit in {rows} rows", examples.len());
        assert!(examples.iter().all(|e| e.input_ids.len() <= len), "an example is longer than {len} tokens");
        let mut batch = Batch {
            input_ids: Vec::with_capacity(rows * len),
            attention_mask: Vec::with_capacity(rows * len),
            labels: Vec::with_capacity(rows * len),
            batch: rows,
            len,
        };
        for example in examples {
            let padding = len - example.input_ids.len();
            batch.input_ids.extend(example.input_ids.iter().copied().chain(std::iter::repeat_n(pad_id, padding)));
            batch
                .attention_mask
                .extend(std::iter::repeat_n(1, example.input_ids.len()).chain(std::iter::repeat_n(0, padding)));
            batch.labels.extend(example.labels.iter().copied().chain(std::iter::repeat_n(IGNORE_INDEX, padding)));
        }
        let missing = (rows - examples.len()) * len;
        batch.input_ids.extend(std::iter::repeat_n(pad_id, missing));
        batch.attention_mask.extend(std::iter::repeat_n(0, missing));
        batch.labels.extend(std::iter::repeat_n(IGNORE_INDEX, missing));
        batch
    }
}
