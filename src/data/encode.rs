//! Rows to training examples: recognises the row's field set, builds the text (templates), and
//! tokenises it with labels that supervise only what the model should learn to write.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;

use serde_json::Value;

use super::source::{Fields, SourceRow, json_type};
use super::template::{AssistantRanges, ChatTemplate, DEFAULT_INSTRUCTION_TEMPLATE, InstructionTemplate};
use super::{DataOptions, Example, IGNORE_INDEX};
use crate::err;
use crate::error::{Error, Result};
use crate::model::TextTokenizer;

/// Why a row produced no example.
pub(super) enum Rejection {
    /// The row itself is malformed; reported with its line, skippable.
    Row(String),
    /// A problem that would hit every row (tokenizer, chat template), so loading stops.
    Fatal(Error),
}

impl From<Error> for Rejection {
    fn from(e: Error) -> Self {
        Rejection::Fatal(e)
    }
}

impl From<String> for Rejection {
    fn from(reason: String) -> Self {
        Rejection::Row(reason)
    }
}

/// A row's example after truncation to `max_len`.
pub(super) struct Encoded {
    pub example: Example,
    pub truncated: bool,
}

const FIELD_SETS: &str =
    "\"text\"; \"prompt\" + \"completion\"; \"instruction\" + \"output\" (+ optional \"input\"); \"messages\"";

pub(super) struct RowEncoder<'a> {
    tokenizer: &'a TextTokenizer,
    max_len: usize,
    eos: Option<u32>,
    instruction_template: InstructionTemplate,
    /// Only an error once a `messages` row needs it: other datasets do not need a chat template.
    chat_template: Result<ChatTemplate>,
    /// Tokens that close an assistant turn of a template without generation tags.
    end_of_turn: HashSet<u32>,
}

impl<'a> RowEncoder<'a> {
    pub fn new(tokenizer: &'a TextTokenizer, options: &DataOptions) -> Result<Self> {
        if options.max_len == 0 {
            return Err(err!(InvalidOptions, "the maximum example length must be at least 1 token"));
        }
        Ok(RowEncoder {
            tokenizer,
            max_len: options.max_len,
            eos: tokenizer.eos_token_ids.first().copied(),
            instruction_template: InstructionTemplate::new(
                options.template.as_deref().unwrap_or(DEFAULT_INSTRUCTION_TEMPLATE),
            )?,
            chat_template: ChatTemplate::new(tokenizer),
            end_of_turn: tokenizer
                .special_token_ids()
                .into_iter()
                .chain(tokenizer.eos_token_ids.iter().copied())
                .collect(),
        })
    }

    pub fn encode(&self, row: &SourceRow) -> Result<Encoded, Rejection> {
        let fields = row.fields.as_ref().map_err(|reason| Rejection::Row(reason.clone()))?;
        let (input_ids, labels) = self.tokenize(fields)?;
        let mut example = Example { input_ids, labels, line: row.line };
        let truncated = example.input_ids.len() > self.max_len;
        example.input_ids.truncate(self.max_len);
        example.labels.truncate(self.max_len);
        Ok(Encoded { example, truncated })
    }

    /// Token ids and labels of a row, by its field set (first match wins, so extra columns such
    /// as an id are ignored).
    fn tokenize(&self, fields: &Fields) -> Result<(Vec<u32>, Vec<i64>), Rejection> {
        if let Some(messages) = fields.get("messages") {
            return self.conversation(messages);
        }
        if fields.contains_key("instruction") && fields.contains_key("output") {
            let prompt = self.instruction_prompt(fields)?;
            return self.prompt_completion(&prompt, non_empty(fields, "output")?);
        }
        if fields.contains_key("prompt") && fields.contains_key("completion") {
            return self.prompt_completion(string(fields, "prompt")?, non_empty(fields, "completion")?);
        }
        if fields.contains_key("text") {
            let mut input_ids = self.tokenizer.encode(non_empty(fields, "text")?, true)?;
            input_ids.extend(self.eos);
            let labels = input_ids.iter().map(|&id| i64::from(id)).collect();
            return Ok((input_ids, labels));
        }
        let found: Vec<String> = fields.keys().map(|key| format!("\"{key}\"")).collect();
        let found = if found.is_empty() { "no fields".to_owned() } else { format!("fields {}", found.join(", ")) };
        Err(Rejection::Row(format!("no recognised set of fields: found {found}; expected one of {FIELD_SETS}")))
    }

    /// `prompt ++ completion ++ EOS`, each part tokenised separately as transformers and TRL do;
    /// only the completion and the EOS are supervised.
    fn prompt_completion(&self, prompt: &str, completion: &str) -> Result<(Vec<u32>, Vec<i64>), Rejection> {
        let mut input_ids = self.tokenizer.encode(prompt, true)?;
        let prompt_len = input_ids.len();
        input_ids.extend(self.tokenizer.encode(completion, false)?);
        input_ids.extend(self.eos);
        let labels = input_ids
            .iter()
            .enumerate()
            .map(|(position, &id)| if position < prompt_len { IGNORE_INDEX } else { i64::from(id) })
            .collect();
        Ok((input_ids, labels))
    }

    /// The instruction template rendered with `instruction`, `input` (empty when absent) and
    /// every other string field of the row.
    fn instruction_prompt(&self, fields: &Fields) -> Result<String, Rejection> {
        let mut variables: BTreeMap<&str, &str> =
            fields.iter().filter_map(|(key, value)| Some((key.as_str(), value.as_str()?))).collect();
        variables.insert("instruction", string(fields, "instruction")?);
        let input = match fields.get("input") {
            None | Some(Value::Null) => "",
            Some(_) => string(fields, "input")?,
        };
        variables.insert("input", input);
        Ok(self.instruction_template.render(&variables)?)
    }

    /// The chat template's rendering of the conversation, tokenised once, supervised where the
    /// assistant writes: see [`supervised_ranges`].
    fn conversation(&self, messages: &Value) -> Result<(Vec<u32>, Vec<i64>), Rejection> {
        let messages = checked_messages(messages)?;
        let template = self.chat_template.as_ref().map_err(|e| Rejection::Fatal(e.clone()))?;
        let rendered = template.render_conversation(messages)?;
        // The template already wrote the special tokens (BOS, end of turn) into the text.
        let (input_ids, offsets) = self.tokenizer.encode_with_offsets(&rendered.text, false)?;
        let ranges = supervised_ranges(&rendered.assistant, &input_ids, &offsets, &self.end_of_turn);
        let labels = input_ids
            .iter()
            .zip(supervised_tokens(&offsets, &ranges))
            .map(|(&id, supervised)| if supervised { i64::from(id) } else { IGNORE_INDEX })
            .collect();
        Ok((input_ids, labels))
    }
}

/// The byte ranges of a rendered conversation the model learns to write, as TRL's
/// `assistant_only_loss` and transformers' `return_assistant_tokens_mask` define them: each
/// assistant turn's content and its end-of-turn token, nothing after it (not the separator, not
/// the next header).
///
/// A template with `{% generation %}` blocks says so itself. For one without, each turn (after
/// its generation prompt) ends with the last end-of-turn token in it: a special token
/// (`<|im_end|>` for ChatML, SmolLM2 and Qwen, `<|eot_id|>` for Llama 3, `<end_of_turn>` for
/// Gemma) or EOS (`</s>`); the `\n` that ChatML and Gemma write after it is the separator. A
/// turn without such a token (a plain-text template) is supervised whole, since its closing text
/// is then the only way the model can learn to stop. Whatever the template writes inside the turn
/// is the assistant's: with Qwen3 that includes the `<think>…</think>` block it puts in front
/// of the final turn's answer (an empty one when the content has no reasoning), which is what
/// the model generates after the generation prompt.
fn supervised_ranges(
    assistant: &AssistantRanges,
    ids: &[u32],
    offsets: &[Range<usize>],
    end_of_turn: &HashSet<u32>,
) -> Vec<Range<usize>> {
    match assistant {
        AssistantRanges::Tagged(ranges) => ranges.clone(),
        AssistantRanges::Turns(turns) => turns
            .iter()
            .map(|turn| {
                // Tokens are in text order: those inside the turn follow the first that starts in it.
                let first = offsets.partition_point(|token| token.start < turn.start);
                let end = (first..offsets.len())
                    .take_while(|&i| offsets[i].end <= turn.end)
                    .filter(|&i| end_of_turn.contains(&ids[i]))
                    .last()
                    .map_or(turn.end, |i| offsets[i].end);
                turn.start..end
            })
            .collect(),
    }
}

/// Which tokens meet a supervised range, tokens and ranges both in text order.
fn supervised_tokens(offsets: &[Range<usize>], ranges: &[Range<usize>]) -> Vec<bool> {
    let mut ranges: Vec<&Range<usize>> = ranges.iter().collect();
    ranges.sort_by_key(|range| range.start);
    let mut next = 0;
    offsets
        .iter()
        .map(|token| {
            // Ranges that end before this token can meet no later one.
            while next < ranges.len() && ranges[next].end <= token.start {
                next += 1;
            }
            ranges[next..].iter().take_while(|range| range.start <= token.end).any(|range| overlaps(token, range))
        })
        .collect()
}

/// Whether a token's bytes meet a supervised range, which is how transformers maps character
/// spans to tokens (`char_to_token` of the first and last character). A token with no bytes
/// counts where it sits.
fn overlaps(token: &Range<usize>, range: &Range<usize>) -> bool {
    if token.is_empty() { range.contains(&token.start) } else { token.start < range.end && range.start < token.end }
}

/// The `messages` list, checked to hold `{role, content}` strings and an assistant turn that
/// follows some other message.
fn checked_messages(messages: &Value) -> Result<&[Value], String> {
    let Value::Array(list) = messages else {
        return Err(format!(
            "field \"messages\" must be a list of {{\"role\", \"content\"}} objects, found {}",
            json_type(messages)
        ));
    };
    for (index, message) in list.iter().enumerate() {
        let number = index + 1;
        let Value::Object(message) = message else {
            return Err(format!(
                "message {number} must be an object with \"role\" and \"content\", found {}",
                json_type(message)
            ));
        };
        for key in ["role", "content"] {
            match message.get(key) {
                Some(Value::String(_)) => {}
                Some(other) => {
                    return Err(format!("message {number}: \"{key}\" must be a string, found {}", json_type(other)));
                }
                None => return Err(format!("message {number} has no \"{key}\"")),
            }
        }
    }
    if !list.iter().any(|message| message["role"] == "assistant") {
        return Err("the conversation has no \"assistant\" message, so there is nothing to learn".to_owned());
    }
    // Each assistant turn is located by rendering the messages before it, which needs some.
    if list[0]["role"] == "assistant" {
        return Err(
            "the conversation starts with an \"assistant\" message; start it with a \"system\" or \"user\" message"
                .to_owned(),
        );
    }
    Ok(list)
}

fn string<'r>(fields: &'r Fields, key: &str) -> Result<&'r str, String> {
    match fields.get(key) {
        Some(Value::String(text)) => Ok(text),
        Some(other) => Err(format!("field \"{key}\" must be a string, found {}", json_type(other))),
        None => Err(format!("field \"{key}\" is missing")),
    }
}

/// A string field that must hold text: the part the model learns from.
fn non_empty<'r>(fields: &'r Fields, key: &str) -> Result<&'r str, String> {
    let text = string(fields, key)?;
    if text.is_empty() {
        return Err(format!("field \"{key}\" is empty"));
    }
    Ok(text)
}
