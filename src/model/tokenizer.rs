//! `tokenizer.json` (via the `tokenizers` crate, the same code Hugging Face runs) plus the parts
//! of `tokenizer_config.json` that training and generation need: special tokens and the chat
//! template.

use std::ops::Range;

use serde_json::Value;
use tokenizers::Tokenizer;

use crate::err;
use crate::error::Result;
use crate::model::config::ModelConfig;
use crate::model::files::FileSource;

pub struct TextTokenizer {
    inner: Tokenizer,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
    /// The Jinja chat template, if the model has one.
    pub chat_template: Option<String>,
    /// `bos_token` / `eos_token` as text, for chat templates that reference them.
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
}

const TOKENIZER: &str = "tokenizer.json";
const TOKENIZER_CONFIG: &str = "tokenizer_config.json";

/// What tokenizers 0.22 panics on instead of returning an error (its untagged helpers `expect`):
/// a JSON syntax error inside the `decoder` object, and a `Precompiled` normalizer whose
/// `precompiled_charsmap` does not decode. Both are checked here so that tokenizers never sees them.
fn check_tokenizer_json(bytes: &[u8]) -> Result<()> {
    let json: Value =
        serde_json::from_slice(bytes).map_err(|e| err!(InvalidTokenizer, "{TOKENIZER} is not valid JSON: {e}"))?;
    let mut pending = vec![&json];
    while let Some(value) = pending.pop() {
        match value {
            Value::Object(map) => {
                if map.get("type").and_then(Value::as_str) == Some("Precompiled") {
                    serde_json::from_value::<tokenizers::normalizers::Precompiled>(value.clone()).map_err(|e| {
                        err!(InvalidTokenizer, "{TOKENIZER} has a Precompiled normalizer that does not decode: {e}")
                    })?;
                }
                pending.extend(map.values());
            }
            Value::Array(items) => pending.extend(items),
            _ => {}
        }
    }
    Ok(())
}

impl TextTokenizer {
    /// Reads `tokenizer.json` (required) and `tokenizer_config.json` (optional) and checks that
    /// every token id fits the model's vocabulary.
    pub fn load(source: &dyn FileSource, config: &ModelConfig) -> Result<Self> {
        let bytes = source.read(TOKENIZER)?;
        let settings = if source.exists(TOKENIZER_CONFIG) {
            let text = source.read_text(TOKENIZER_CONFIG)?;
            Some(
                serde_json::from_str::<Value>(&text)
                    .map_err(|e| err!(InvalidTokenizer, "{TOKENIZER_CONFIG} is not valid JSON: {e}"))?,
            )
        } else {
            None
        };
        Self::from_parts(&bytes, settings.as_ref(), config)
    }

    pub fn from_parts(tokenizer_json: &[u8], settings: Option<&Value>, config: &ModelConfig) -> Result<Self> {
        check_tokenizer_json(tokenizer_json)?;
        let inner = Tokenizer::from_bytes(tokenizer_json)
            .map_err(|e| err!(InvalidTokenizer, "{TOKENIZER} could not be read: {e}"))?;
        let (max_token, max_id) = inner
            .get_vocab(true)
            .into_iter()
            .max_by_key(|(_, id)| *id)
            .ok_or_else(|| err!(InvalidTokenizer, "{TOKENIZER} has an empty vocabulary"))?;
        if max_id as usize >= config.vocab_size {
            return Err(err!(
                InvalidTokenizer,
                "{TOKENIZER} does not fit the model: token \"{max_token}\" has id {max_id} but config.json vocab_size is {} (the tokenizer belongs to another model?)",
                config.vocab_size
            ));
        }
        let token = |key: &str| settings.and_then(|s| s.get(key)).and_then(token_text);
        let id_of = |text: &Option<String>| text.as_deref().and_then(|t| inner.token_to_id(t));
        let bos_token = token("bos_token");
        let eos_token = token("eos_token");
        let pad_token = token("pad_token");
        let mut eos_token_ids = config.eos_token_ids.clone();
        if let Some(id) = id_of(&eos_token).filter(|id| !eos_token_ids.contains(id)) {
            eos_token_ids.push(id);
        }
        let chat_template = settings.and_then(|s| s.get("chat_template")).and_then(chat_template_text);
        Ok(TextTokenizer {
            bos_token_id: id_of(&bos_token).or(config.bos_token_id),
            pad_token_id: id_of(&pad_token).or(config.pad_token_id),
            eos_token_ids,
            chat_template,
            bos_token,
            eos_token,
            inner,
        })
    }

    /// Token ids of `text`; `add_special_tokens` applies the tokenizer's post-processor (e.g. a
    /// BOS token), as transformers does by default.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| err!(InvalidTokenizer, "could not tokenise text: {e}"))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Like [`encode`](Self::encode), plus the byte range of `text` each token came from, to map
    /// tokens back to spans of the text (e.g. which tokens belong to an assistant turn).
    pub fn encode_with_offsets(&self, text: &str, add_special_tokens: bool) -> Result<(Vec<u32>, Vec<Range<usize>>)> {
        let encoding = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| err!(InvalidTokenizer, "could not tokenise text: {e}"))?;
        Ok((encoding.get_ids().to_vec(), encoding.get_offsets().iter().map(|&(start, end)| start..end).collect()))
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner.decode(ids, skip_special_tokens).map_err(|e| err!(InvalidTokenizer, "could not decode tokens: {e}"))
    }

    /// The text of one token id (for showing top-k predictions).
    pub fn token_text(&self, id: u32) -> String {
        self.decode(&[id], false).unwrap_or_else(|_| self.inner.id_to_token(id).unwrap_or_default())
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Ids of the added tokens marked special (`<|im_end|>`, `<|eot_id|>`, `<end_of_turn>`, ...):
    /// the tokens chat templates write around turns.
    pub fn special_token_ids(&self) -> Vec<u32> {
        self.inner.get_added_tokens_decoder().into_iter().filter(|(_, token)| token.special).map(|(id, _)| id).collect()
    }
}

/// A special token in `tokenizer_config.json`: a string or an AddedToken object.
fn token_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

/// `chat_template` is a string, or a list of `{name, template}` where "default" is the one to use.
fn chat_template_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => {
            let named = |name: &str| {
                items.iter().find(|t| t.get("name").and_then(Value::as_str) == Some(name))?.get("template")?.as_str()
            };
            named("default").or_else(|| items.first()?.get("template")?.as_str()).map(str::to_owned)
        }
        _ => None,
    }
}
