//! File formats: turns the bytes of a `.jsonl`, `.json`, `.csv` or `.txt` file into rows of named
//! fields, each with the line it starts on, so every later error can say `file:line`.

use serde_json::{Map, Value};

use crate::err;
use crate::error::Result;

/// The fields of one row, whatever the file format.
pub(super) type Fields = Map<String, Value>;

/// One row of the file: its fields, or why they could not be read (a row-level problem that
/// `skip_bad_rows` may skip).
pub(super) struct SourceRow {
    /// 1-based line of the file where the row starts.
    pub line: usize,
    pub fields: Result<Fields, String>,
}

const SUPPORTED: &str = ".jsonl, .ndjson, .json, .csv or .txt";

/// Splits a dataset file into rows; the extension of `file_name` picks the format. Errors that
/// make the whole file unreadable (not UTF-8, a JSON array with a syntax error, an unknown format)
/// are returned here; problems confined to one row are left in its [`SourceRow::fields`].
pub(super) fn read_rows(file_name: &str, bytes: &[u8]) -> Result<Vec<SourceRow>> {
    let extension = file_name.rsplit_once('.').map(|(_, ext)| ext.to_ascii_lowercase()).unwrap_or_default();
    let text = utf8_text(file_name, bytes)?;
    match extension.as_str() {
        "jsonl" | "ndjson" => Ok(json_lines(text)),
        "json" => json_array(file_name, text),
        "csv" => Ok(csv_records(text)),
        "txt" => Ok(paragraphs(text)),
        _ => Err(err!(InvalidDataset, "{file_name}: unsupported dataset format; use {SUPPORTED}")),
    }
}

/// The file as text, without a byte-order mark (spreadsheet programs write one into CSV files).
fn utf8_text<'a>(file_name: &str, bytes: &'a [u8]) -> Result<&'a str> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let valid = &bytes[..e.valid_up_to()];
        let line = 1 + valid.iter().filter(|&&b| b == b'\n').count();
        err!(
            InvalidDataset,
            "{file_name}:{line}: the file is not valid UTF-8 text (at byte {}); save it as UTF-8",
            e.valid_up_to()
        )
    })?;
    Ok(text.strip_prefix('\u{feff}').unwrap_or(text))
}

/// JSONL: one JSON object per non-empty line.
fn json_lines(text: &str) -> Vec<SourceRow> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| SourceRow {
            line: index + 1,
            fields: serde_json::from_str::<Value>(line).map_err(|e| json_error(&e)).and_then(object),
        })
        .collect()
}

/// A top-level JSON array of row objects. A syntax error anywhere makes the array unreadable, so
/// it fails the whole file; an item that is not an object is a row error.
fn json_array(file_name: &str, text: &str) -> Result<Vec<SourceRow>> {
    let jsonl_hint =
        if text.trim_start().starts_with('{') { " (for one JSON object per line, name the file .jsonl)" } else { "" };
    let value: Value = serde_json::from_str(text)
        .map_err(|e| err!(InvalidDataset, "{file_name}:{}: {}{jsonl_hint}", e.line(), json_error(&e)))?;
    let Value::Array(items) = value else {
        return Err(err!(
            InvalidDataset,
            "{file_name}: a .json dataset must be an array of rows, found {}{jsonl_hint}",
            json_type(&value)
        ));
    };
    let lines = array_item_lines(text);
    debug_assert_eq!(lines.len(), items.len());
    Ok(lines.into_iter().zip(items).map(|(line, item)| SourceRow { line, fields: object(item) }).collect())
}

/// The 1-based line on which each item of the top-level array of `text` (valid JSON) starts;
/// serde_json does not report positions of values it parsed successfully.
fn array_item_lines(text: &str) -> Vec<usize> {
    let mut lines = Vec::new();
    let (mut line, mut depth) = (1, 0usize);
    let (mut in_string, mut escaped, mut expecting_item) = (false, false, false);
    for byte in text.bytes() {
        if byte == b'\n' {
            line += 1;
        }
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        if byte.is_ascii_whitespace() {
            continue;
        }
        if depth == 1 && expecting_item && byte != b']' {
            lines.push(line);
            expecting_item = false;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                expecting_item |= depth == 1;
            }
            b']' | b'}' => depth -= 1,
            b',' if depth == 1 => expecting_item = true,
            _ => {}
        }
    }
    lines
}

/// CSV with a header row naming the fields; every value is a string.
fn csv_records(text: &str) -> Vec<SourceRow> {
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(text.as_bytes());
    let headers: Vec<String> = match reader.headers() {
        Ok(headers) => headers.iter().map(|h| h.trim().to_owned()).collect(),
        Err(e) => {
            return vec![SourceRow { line: 1, fields: Err(format!("the CSV header row could not be read: {e}")) }];
        }
    };
    reader
        .records()
        .map(|record| match record {
            Ok(record) => SourceRow {
                line: record.position().map_or(0, |p| p.line() as usize),
                fields: Ok(headers.iter().cloned().zip(record.iter().map(|v| Value::String(v.to_owned()))).collect()),
            },
            Err(e) => SourceRow { line: e.position().map_or(0, |p| p.line() as usize), fields: Err(csv_error(&e)) },
        })
        .collect()
}

fn csv_error(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
            format!("the record has {len} fields but the header row has {expected_len}")
        }
        _ => format!("invalid CSV: {e}"),
    }
}

/// Plain text: paragraphs separated by blank lines, each a `{"text"}` row.
fn paragraphs(text: &str) -> Vec<SourceRow> {
    let mut rows = Vec::new();
    let mut current: Option<(usize, Vec<&str>)> = None;
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            rows.extend(current.take().map(text_row));
        } else {
            current.get_or_insert_with(|| (index + 1, Vec::new())).1.push(line);
        }
    }
    rows.extend(current.map(text_row));
    rows
}

fn text_row((line, lines): (usize, Vec<&str>)) -> SourceRow {
    let fields = [("text".to_owned(), Value::String(lines.join("\n")))].into_iter().collect();
    SourceRow { line, fields: Ok(fields) }
}

fn object(value: Value) -> Result<Fields, String> {
    match value {
        Value::Object(fields) => Ok(fields),
        other => Err(format!("expected a JSON object with the row's fields, found {}", json_type(&other))),
    }
}

/// serde_json's message with its position as a column only: the line is reported separately.
fn json_error(e: &serde_json::Error) -> String {
    let message = e.to_string();
    let position = format!(" at line {} column {}", e.line(), e.column());
    let reason = message.strip_suffix(&position).unwrap_or(&message);
    format!("invalid JSON: {reason} (column {})", e.column())
}

/// "a string", "a number", ... for error messages.
pub(super) fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_and_fields(file_name: &str, text: &str) -> Vec<(usize, Result<Fields, String>)> {
        read_rows(file_name, text.as_bytes()).unwrap().into_iter().map(|r| (r.line, r.fields)).collect()
    }

    #[test]
    fn array_items_start_lines_ignore_brackets_in_strings() {
        let text = "[\n  {\"a\": \"[,{\"},\n  {\"b\": [1, 2]}, 3,\n\n  \"x\\\"]\"\n]";
        assert_eq!(array_item_lines(text), vec![2, 3, 3, 5]);
        assert_eq!(array_item_lines("[]"), Vec::<usize>::new());
    }

    #[test]
    fn json_array_rows_carry_their_lines() {
        let rows = lines_and_fields("d.json", "[{\"text\": \"a\"},\n\n {\"text\": \"b\"}, 7]");
        assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 3, 3]);
        assert!(rows[2].1.as_ref().unwrap_err().contains("found a number"));
    }

    #[test]
    fn json_file_errors_point_at_the_line() {
        let e = read_rows("d.json", b"[{\"text\": \"a\"},\n {\"text\": }]").err().unwrap();
        assert!(e.message.starts_with("d.json:2: invalid JSON"), "{e}");
        let e = read_rows("d.json", b"{\"text\": \"a\"}\n{\"text\": \"b\"}").err().unwrap();
        assert!(e.message.contains("name the file .jsonl"), "{e}");
    }

    #[test]
    fn jsonl_skips_blank_lines_and_reports_bad_ones() {
        let rows = lines_and_fields("d.jsonl", "{\"text\": \"a\"}\r\n\n{\"text\": \n[1]\n");
        assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 3, 4]);
        assert!(rows[0].1.is_ok());
        let broken = rows[1].1.as_ref().unwrap_err();
        assert!(broken.starts_with("invalid JSON: EOF while parsing") && !broken.contains("line"), "{broken}");
        assert!(rows[2].1.as_ref().unwrap_err().contains("found a list"));
    }

    #[test]
    fn csv_records_report_the_line_they_start_on() {
        let rows = lines_and_fields("d.csv", "\u{feff}prompt, completion\n\"a\nb\",c\nd\n");
        assert_eq!(rows[0].0, 2);
        let fields = rows[0].1.as_ref().unwrap();
        assert_eq!(fields["prompt"], "a\nb");
        assert_eq!(fields["completion"], "c");
        assert_eq!(rows[1].0, 4);
        assert_eq!(rows[1].1.as_ref().unwrap_err(), "the record has 1 fields but the header row has 2");
    }

    #[test]
    fn text_paragraphs_start_at_their_first_line() {
        let rows = lines_and_fields("d.txt", "\n\nfirst\nparagraph\n \nsecond\n");
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].0, rows[1].0), (3, 6));
        assert_eq!(rows[0].1.as_ref().unwrap()["text"], "first\nparagraph");
    }

    #[test]
    fn file_level_errors_name_the_file() {
        let e = read_rows("data.parquet", b"").err().unwrap();
        assert!(e.message.starts_with("data.parquet: unsupported dataset format"), "{e}");
        let e = read_rows("d.jsonl", b"{\"text\": \"a\"}\n{\"text\": \"\xff\"}").err().unwrap();
        assert!(e.message.starts_with("d.jsonl:2: the file is not valid UTF-8"), "{e}");
    }
}
