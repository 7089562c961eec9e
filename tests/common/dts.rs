//! Reads the interfaces of `npm/src/index.d.ts`, the JS API's declared schema, so that tests can
//! compare it with what the Rust side serialises and with the CLI's flags.

use std::collections::BTreeMap;
use std::path::Path;

/// One declared field: whether it is optional (`name?:`) and its doc comment.
#[derive(Clone, Debug)]
pub struct Field {
    pub optional: bool,
    pub doc: String,
}

/// The text of `npm/src/index.d.ts`.
pub fn index_d_ts() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("npm/src/index.d.ts");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The top-level fields of `export interface <name> { ... }` (not those of nested object types).
pub fn interface(source: &str, name: &str) -> BTreeMap<String, Field> {
    let start = source
        .find(&format!("export interface {name} "))
        .unwrap_or_else(|| panic!("index.d.ts declares no interface {name}"));
    let body_start = start + source[start..].find('{').expect("an interface body") + 1;
    let mut fields = BTreeMap::new();
    let (mut depth, mut doc) = (0usize, String::new());
    let mut in_comment = false;
    for line in source[body_start..].lines() {
        let trimmed = line.trim();
        if in_comment || trimmed.starts_with("/**") {
            doc.push_str(trimmed.trim_start_matches("/**").trim_end_matches("*/").trim_start_matches('*'));
            doc.push(' ');
            in_comment = !trimmed.ends_with("*/");
            continue;
        }
        if depth == 0 && trimmed.starts_with('}') {
            break;
        }
        if depth == 0 {
            let declaration = trimmed.strip_prefix("readonly ").unwrap_or(trimmed);
            let name_end = declaration.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(0);
            let rest = &declaration[name_end..];
            if name_end > 0 && (rest.starts_with(':') || rest.starts_with("?:")) {
                let optional = rest.starts_with('?');
                fields.insert(declaration[..name_end].to_owned(), Field { optional, doc: doc.trim().to_owned() });
            }
        }
        depth = (depth + trimmed.matches('{').count()).saturating_sub(trimmed.matches('}').count());
        doc.clear();
    }
    fields
}

/// The JSON value a doc comment gives as the default (`default 8`, ``default `"lora"` ``,
/// `default {}`), if it gives one.
pub fn documented_default(doc: &str) -> Option<serde_json::Value> {
    let after = doc.split("default ").nth(1)?;
    let token = after.split_whitespace().next()?.trim_matches('`').trim_end_matches([',', '.', ';', ')']);
    let token = token.trim_matches('`');
    serde_json::from_str(token).ok()
}

/// JSON equality with numbers compared by value (`16` = `16.0`).
pub fn same_value(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}
