//! Jinja templates (minijinja): the user's instruction template and the model's chat template,
//! set up the way transformers renders them, so the model is trained on the text it will see.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::sync::LazyLock;

use minijinja::{Environment, ErrorKind, State, UndefinedBehavior, Value};
use regex::Regex;

use super::strftime::strftime_now;
use crate::err;
use crate::error::Result;
use crate::model::TextTokenizer;

/// The Alpaca prompt, used for `{"instruction","input","output"}` rows when no template is set;
/// the "### Input:" section appears only when `input` is not empty.
pub const DEFAULT_INSTRUCTION_TEMPLATE: &str = "{% if input %}Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n### Instruction:\n{{ instruction }}\n\n### Input:\n{{ input }}\n\n### Response:\n{% else %}Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\n{{ instruction }}\n\n### Response:\n{% endif %}";

/// Instructions one rendering may run: far more than any real template needs for a long
/// conversation, and a bound on templates (from a downloaded `tokenizer_config.json`) that loop
/// for ever.
const RENDER_FUEL: u64 = 5_000_000;

/// Bytes one rendering may write.
const MAX_RENDERED_BYTES: usize = 64 << 20;

/// What both kinds of template get: Python string methods (`.strip()`, `.startswith()`, which
/// Hugging Face templates call), the helper functions transformers provides, and bounds on the
/// work a rendering may do.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_fuel(Some(RENDER_FUEL));
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", raise_exception);
    env.add_function("strftime_now", strftime_now);
    env
}

/// The prompt template for instruction rows.
pub(super) struct InstructionTemplate(Environment<'static>);

const INSTRUCTION_TEMPLATE: &str = "instruction template";

impl InstructionTemplate {
    pub fn new(source: &str) -> Result<Self> {
        let mut env = environment();
        // What the user writes is what the model sees, final newline included; a misspelt
        // variable is an error rather than silently empty text.
        env.set_keep_trailing_newline(true);
        env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
        env.add_template_owned(INSTRUCTION_TEMPLATE, source.to_owned())
            .map_err(|e| err!(InvalidOptions, "the instruction template could not be parsed: {e}"))?;
        Ok(InstructionTemplate(env))
    }

    /// The prompt for one row; an error is a row error.
    pub fn render(&self, variables: &BTreeMap<&str, &str>) -> Result<String, String> {
        let template = self.0.get_template(INSTRUCTION_TEMPLATE).map_err(|e| render_error(INSTRUCTION_TEMPLATE, &e))?;
        render_bounded(INSTRUCTION_TEMPLATE, &template, variables)
    }
}

/// The model's chat template from `tokenizer_config.json`.
pub(super) struct ChatTemplate {
    env: Environment<'static>,
    /// Whether the template marks what the model writes with `{% generation %}` blocks.
    tagged: bool,
    /// The template as written, which markers must not occur in.
    source: String,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

const CHAT_TEMPLATE: &str = "chat template";

/// A conversation as the model sees it, and the byte ranges of that text the model learns to
/// write.
pub(super) struct RenderedConversation {
    pub text: String,
    pub assistant: AssistantRanges,
}

pub(super) enum AssistantRanges {
    /// Exactly what the template's `{% generation %}` blocks enclose, as transformers'
    /// `return_assistant_tokens_mask` takes them.
    Tagged(Vec<Range<usize>>),
    /// Each assistant turn from after its generation prompt to where the next message would
    /// start: its content, its end-of-turn token and any separator after it, which the caller
    /// cuts off (it knows the tokens).
    Turns(Vec<Range<usize>>),
}

impl ChatTemplate {
    pub fn new(tokenizer: &TextTokenizer) -> Result<Self> {
        let source = tokenizer.chat_template.as_deref().ok_or_else(|| {
            err!(
                InvalidTokenizer,
                "the dataset has \"messages\" rows but the model's tokenizer_config.json has no chat_template; use a model with a chat template or convert the rows to prompt/completion"
            )
        })?;
        // transformers renders chat templates with these Jinja settings.
        let mut env = environment();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.add_filter(GENERATION_FILTER, generation_block);
        let (filtered, tagged) = generation_tags_as_filter_blocks(source);
        env.add_template_owned(CHAT_TEMPLATE, filtered).map_err(|e| {
            err!(InvalidTokenizer, "the chat_template in tokenizer_config.json could not be parsed: {e}")
        })?;
        Ok(ChatTemplate {
            env,
            tagged,
            source: source.to_owned(),
            bos_token: tokenizer.bos_token.clone(),
            eos_token: tokenizer.eos_token.clone(),
        })
    }

    /// The whole conversation and where its assistant parts are: the `{% generation %}` blocks
    /// of a tagged template, else each assistant turn ([`AssistantRanges::Turns`]).
    pub fn render_conversation(&self, messages: &[serde_json::Value]) -> Result<RenderedConversation, String> {
        if self.tagged {
            let messages_json = serde_json::to_string(messages).unwrap_or_default();
            let tokens = [&self.bos_token, &self.eos_token].map(|token| token.as_deref().unwrap_or_default());
            let markers = GenerationMarkers::unused_in(&[&messages_json, &self.source, tokens[0], tokens[1]])?;
            let marked = self.render_with(messages, false, Some(&markers))?;
            let (text, ranges) = markers.take_ranges(&marked)?;
            return Ok(RenderedConversation { text, assistant: AssistantRanges::Tagged(ranges) });
        }
        let (text, turns) = self.render_turns(messages)?;
        Ok(RenderedConversation { text, assistant: AssistantRanges::Turns(turns) })
    }

    /// Each assistant turn, found by rendering the conversation up to it with the generation
    /// prompt and then through it, which needs every rendering to extend the previous one.
    fn render_turns(&self, messages: &[serde_json::Value]) -> Result<(String, Vec<Range<usize>>), String> {
        let rendering = |count: usize, generation_prompt: bool| -> Result<Rendering, String> {
            Ok(Rendering { count, generation_prompt, text: self.render(&messages[..count], generation_prompt)? })
        };
        let mut renderings = Vec::new();
        for (index, message) in messages.iter().enumerate() {
            if message["role"] == "assistant" {
                renderings.push(rendering(index, true)?);
                renderings.push(rendering(index + 1, false)?);
            }
        }
        let turns = renderings.chunks_exact(2).map(|turn| turn[0].text.len()..turn[1].text.len()).collect();
        renderings.push(rendering(messages.len(), false)?);
        for pair in renderings.windows(2) {
            if !pair[1].text.starts_with(pair[0].text.as_str()) {
                return Err(format!(
                    "the chat template is not prefix-stable: its rendering of {} does not start with its rendering of {}, so the assistant turns cannot be located in the text (templates that rewrite earlier turns, such as Qwen3's, which drops the reasoning of earlier turns, need {{% generation %}} tags around what the assistant writes, as TRL's training templates have)",
                    pair[1].describe(),
                    pair[0].describe()
                ));
            }
        }
        let full = renderings.pop().expect("the full rendering was just pushed");
        Ok((full.text, turns))
    }

    /// The conversation's text (generation blocks render as their body).
    pub fn render(&self, messages: &[serde_json::Value], add_generation_prompt: bool) -> Result<String, String> {
        self.render_with(messages, add_generation_prompt, None)
    }

    fn render_with(
        &self,
        messages: &[serde_json::Value],
        add_generation_prompt: bool,
        markers: Option<&GenerationMarkers>,
    ) -> Result<String, String> {
        let mut context = BTreeMap::from([
            ("messages", Value::from_serialize(messages)),
            ("add_generation_prompt", Value::from(add_generation_prompt)),
            ("tools", Value::from(())),
        ]);
        // Like transformers: a special token the tokenizer does not define is undefined.
        for (name, token) in [("bos_token", &self.bos_token), ("eos_token", &self.eos_token)] {
            if let Some(token) = token {
                context.insert(name, Value::from(token.as_str()));
            }
        }
        if let Some(markers) = markers {
            context.insert(GENERATION_MARKERS, Value::from(markers.pair()));
        }
        let template = self.env.get_template(CHAT_TEMPLATE).map_err(|e| render_error(CHAT_TEMPLATE, &e))?;
        render_bounded(CHAT_TEMPLATE, &template, context)
    }
}

/// The chat template's text for the first `count` messages.
struct Rendering {
    count: usize,
    generation_prompt: bool,
    text: String,
}

impl Rendering {
    fn describe(&self) -> String {
        let messages = if self.count == 1 { "message".to_owned() } else { format!("{} messages", self.count) };
        let prompt = if self.generation_prompt { " plus the assistant prompt" } else { "" };
        format!("the first {messages}{prompt}")
    }
}

/// The error `raise_exception(message)` raises, kept as the minijinja error's source so the row
/// error can show the template's own message.
#[derive(Debug)]
struct TemplateException(String);

impl fmt::Display for TemplateException {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TemplateException {}

/// `raise_exception(message)`: how Hugging Face chat templates reject a conversation they cannot
/// render (e.g. roles that do not alternate).
fn raise_exception(message: String) -> Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message.clone()).with_source(TemplateException(message)))
}

fn render_error(template: &str, e: &minijinja::Error) -> String {
    match e.kind() {
        ErrorKind::OutOfFuel => {
            return format!(
                "the {template} did not finish: it ran over {RENDER_FUEL} instructions (a loop that does not end?)"
            );
        }
        ErrorKind::WriteFailure => {
            return format!("the {template} wrote more than {} MiB of text", MAX_RENDERED_BYTES >> 20);
        }
        _ => {}
    }
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if let Some(raised) = cause.downcast_ref::<TemplateException>() {
            return format!("the {template} rejected this row: {raised}");
        }
        source = cause.source();
    }
    format!("the {template} failed: {e}")
}

/// Renders into memory, failing (as a write failure) past [`MAX_RENDERED_BYTES`].
fn render_bounded(
    name: &str,
    template: &minijinja::Template,
    context: impl serde::Serialize,
) -> Result<String, String> {
    let mut output = BoundedOutput::default();
    template.render_captured_to(context, &mut output).map_err(|e| render_error(name, &e))?;
    // minijinja writes whole `str`s and the writer takes all or nothing, so this is UTF-8.
    String::from_utf8(output.0).map_err(|_| format!("the {name} wrote text that is not UTF-8"))
}

#[derive(Default)]
struct BoundedOutput(Vec<u8>);

impl std::io::Write for BoundedOutput {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + bytes.len() > MAX_RENDERED_BYTES {
            return Err(std::io::Error::other("rendering too long"));
        }
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The filter that transformers' `{% generation %}…{% endgeneration %}` tags become.
const GENERATION_FILTER: &str = "webtune_generation";
/// The context variable holding the [`GenerationMarkers`] of a rendering that wants them.
const GENERATION_MARKERS: &str = "webtune_generation_markers";

/// transformers' `{% generation %}…{% endgeneration %}` marks what the assistant writes (its
/// `AssistantTracker` records where each block's output lands). minijinja has no such tag, so
/// each becomes a `{% filter %}` block, which keeps block-tag whitespace handling (`trim_blocks`,
/// `lstrip_blocks`, `-`) and sees the block's output. Also says whether the template had tags.
fn generation_tags_as_filter_blocks(source: &str) -> (String, bool) {
    static TAG: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"\{%([-+]?)\s*(end)?generation\s*(-?)%\}").expect("valid regex"));
    let tagged = TAG.is_match(source);
    let source = TAG.replace_all(source, |tag: &regex::Captures| {
        let statement =
            if tag.get(2).is_some() { "endfilter".to_owned() } else { format!("filter {GENERATION_FILTER}") };
        format!("{{%{} {statement} {}%}}", &tag[1], &tag[3])
    });
    (source.into_owned(), tagged)
}

/// A generation block's output, between markers when the rendering asked for them.
fn generation_block(state: &State, body: String) -> String {
    match state.lookup(GENERATION_MARKERS).as_ref().and_then(Value::as_str).and_then(GenerationMarkers::from_pair) {
        Some(markers) => format!("{}{body}{}", markers.start, markers.end),
        None => body,
    }
}

/// Two characters that open and close a generation block in the rendered text, chosen from the
/// Unicode private use planes among those the inputs of the rendering do not contain.
struct GenerationMarkers {
    start: char,
    end: char,
}

impl GenerationMarkers {
    fn unused_in(inputs: &[&str]) -> Result<Self, String> {
        let used: std::collections::BTreeSet<char> =
            inputs.iter().flat_map(|text| text.chars()).filter(|c| ('\u{F0000}'..='\u{10FFFD}').contains(c)).collect();
        let mut free = ('\u{F0000}'..='\u{10FFFD}').filter(|c| !used.contains(c));
        match (free.next(), free.next()) {
            (Some(start), Some(end)) => Ok(GenerationMarkers { start, end }),
            _ => Err("the conversation uses every private-use character, so its generation blocks cannot be marked"
                .to_owned()),
        }
    }

    fn pair(&self) -> String {
        [self.start, self.end].into_iter().collect()
    }

    fn from_pair(pair: &str) -> Option<Self> {
        let mut chars = pair.chars();
        Some(GenerationMarkers { start: chars.next()?, end: chars.next()? })
    }

    /// The text without markers and the byte range of each block in it.
    fn take_ranges(&self, marked: &str) -> Result<(String, Vec<Range<usize>>), String> {
        let mut text = String::with_capacity(marked.len());
        let (mut open, mut ranges) = (Vec::new(), Vec::new());
        for c in marked.chars() {
            if c == self.start {
                open.push(text.len());
            } else if c == self.end {
                let start = open.pop().ok_or_else(unbalanced)?;
                ranges.push(start..text.len());
            } else {
                text.push(c);
            }
        }
        if !open.is_empty() {
            return Err(unbalanced());
        }
        ranges.sort_by_key(|range| range.start);
        Ok((text, ranges))
    }
}

fn unbalanced() -> String {
    "the chat template's {% generation %} blocks could not be located in its output".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instruction(template: &str, variables: &[(&str, &str)]) -> Result<String, String> {
        InstructionTemplate::new(template).unwrap().render(&variables.iter().copied().collect())
    }

    #[test]
    fn default_template_shows_input_only_when_present() {
        let with_input =
            instruction(DEFAULT_INSTRUCTION_TEMPLATE, &[("instruction", "Add."), ("input", "1 2")]).unwrap();
        assert!(with_input.starts_with("Below is an instruction that describes a task, paired with an input"));
        assert!(with_input.ends_with("### Instruction:\nAdd.\n\n### Input:\n1 2\n\n### Response:\n"));
        let without = instruction(DEFAULT_INSTRUCTION_TEMPLATE, &[("instruction", "Add."), ("input", "")]).unwrap();
        assert_eq!(
            without,
            "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\nAdd.\n\n### Response:\n"
        );
    }

    #[test]
    fn instruction_templates_keep_the_final_newline_and_reject_unknown_variables() {
        assert_eq!(instruction("Q: {{ instruction.strip() }}\n", &[("instruction", " hi ")]).unwrap(), "Q: hi\n");
        let e = instruction("{{ instructoin }}", &[("instruction", "x")]).unwrap_err();
        assert!(e.starts_with("the instruction template failed: undefined value"), "{e}");
        let e = InstructionTemplate::new("{% if %}").err().unwrap();
        assert!(e.message.starts_with("the instruction template could not be parsed"), "{e}");
    }

    #[test]
    fn raise_exception_shows_the_template_message() {
        let e = instruction("{{ raise_exception('roles must alternate') }}", &[]).unwrap_err();
        assert_eq!(e, "the instruction template rejected this row: roles must alternate");
    }

    #[test]
    fn generation_tags_become_filter_blocks() {
        let source = "a{%- generation %} b {% endgeneration -%} c{% generation%}d{%endgeneration%}";
        let (filtered, tagged) = generation_tags_as_filter_blocks(source);
        assert!(tagged);
        assert_eq!(
            filtered,
            "a{%- filter webtune_generation %} b {% endfilter -%} c{% filter webtune_generation %}d{% endfilter %}"
        );
        assert!(!generation_tags_as_filter_blocks("{{ generation }}").1);
    }

    #[test]
    fn markers_give_the_ranges_of_blocks_and_avoid_the_inputs() {
        let markers = GenerationMarkers::unused_in(&["x\u{F0000}y", "\u{F0002}"]).unwrap();
        assert_eq!((markers.start, markers.end), ('\u{F0001}', '\u{F0003}'));
        let marked = "ab\u{F0001}cd\u{F0003}e\u{F0001}\u{F0003}";
        assert_eq!(markers.take_ranges(marked).unwrap(), ("abcde".to_owned(), vec![2..4, 5..5]));
        assert!(markers.take_ranges("\u{F0003}a").is_err() && markers.take_ranges("\u{F0001}a").is_err());
    }

    #[test]
    fn endless_templates_stop() {
        let e = instruction("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}", &[])
            .unwrap_err();
        assert!(e.contains("did not finish"), "{e}");
        let e = instruction("{% for a in range(100) %}{{ 'x' * 1000000 }}{% endfor %}", &[]).unwrap_err();
        assert!(e.contains("wrote more than 64 MiB"), "{e}");
    }
}
