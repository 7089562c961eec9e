//! Parameter-efficient fine-tuning methods and their files: PEFT's (LoRA, PiSSA, DoRA, IA3,
//! prompt tuning), AdapterHub's (bottleneck adapters), llama.cpp's GGUF LoRA, and merged models.

pub mod adapterhub;
pub mod bottleneck;
pub mod files;
pub mod gguf;
pub mod ia3;
pub mod lora;
mod lora_config;
pub mod merge;
pub mod prompt;
mod svd;

use burn::tensor::Tensor;

use crate::err;
use crate::error::Result;
use crate::model::{AttentionContext, CausalLm, FileSource, KvCache, LayerHooks, NoAdapter};
pub use bottleneck::{BottleneckAdapter, BottleneckConfig, BottleneckInit, NonLinearity, ReductionFactor};
pub use ia3::{Ia3Adapter, Ia3Config};
pub use lora::{LoraAdapter, LoraConfig, LoraInit, default_targets};
pub use prompt::{PromptAdapter, PromptConfig, PromptInit};

/// A trained or training adapter: what PEFT calls a `PeftModel`'s adapter, or an AdapterHub
/// bottleneck adapter.
#[derive(Clone)]
pub enum Adapter {
    /// LoRA, PiSSA (`pissa_initial`) and DoRA (`magnitude`).
    Lora(LoraAdapter),
    Prompt(PromptAdapter),
    Ia3(Ia3Adapter),
    Bottleneck(BottleneckAdapter),
}

/// PEFT's state-dict key of an adapter tensor of the module at `path` (`model.layers.0.self_attn.q_proj`):
/// `base_model.model.<path>.<name>` with `name` = `lora_A.weight`, `lora_B.weight`,
/// `lora_magnitude_vector` or `ia3_l`, PEFT's adapter name (`.default`) removed as PEFT saves it.
pub fn peft_key(path: &str, name: &str) -> String {
    format!("base_model.model.{path}.{name}")
}

/// The files an adapter can be exported as; JS and the CLI name them `peft`, `adapterhub`,
/// `gguf` and `merged`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// PEFT's `adapter_config.json` + `adapter_model.safetensors` ([`files::export`]).
    Peft,
    /// AdapterHub's `adapter_config.json` + `adapter.safetensors` ([`adapterhub::export`]).
    AdapterHub,
    /// llama.cpp's GGUF LoRA ([`gguf::export_gguf`]).
    Gguf,
    /// A Hugging Face model folder with the adapter folded into the weights ([`merge`]).
    Merged,
}

impl ExportFormat {
    pub const ALL: [ExportFormat; 4] =
        [ExportFormat::Peft, ExportFormat::AdapterHub, ExportFormat::Gguf, ExportFormat::Merged];

    pub fn name(self) -> &'static str {
        match self {
            ExportFormat::Peft => "peft",
            ExportFormat::AdapterHub => "adapterhub",
            ExportFormat::Gguf => "gguf",
            ExportFormat::Merged => "merged",
        }
    }
}

impl std::str::FromStr for ExportFormat {
    type Err = crate::Error;

    fn from_str(name: &str) -> Result<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name).ok_or_else(|| {
            err!(InvalidOptions, "export format \"{name}\" is not one of peft, adapterhub, gguf, merged")
        })
    }
}

impl Adapter {
    /// No adapter: the base model (a LoRA over no layer), for evaluating or sampling the base.
    pub fn none(lm: &CausalLm) -> Adapter {
        Adapter::Lora(LoraAdapter::from_modules(lm, LoraConfig::default(), 0, Vec::new()))
    }

    /// Positions the adapter adds in front of every sequence (prompt tuning's virtual tokens).
    pub fn prefix_len(&self) -> usize {
        match self {
            Adapter::Prompt(p) => p.len(),
            Adapter::Lora(_) | Adapter::Ia3(_) | Adapter::Bottleneck(_) => 0,
        }
    }

    /// PEFT's `peft_type`; bottleneck adapters, which PEFT does not have, report `"BOTTLENECK"`.
    pub fn peft_type(&self) -> &'static str {
        match self {
            Adapter::Lora(_) => "LORA",
            Adapter::Prompt(_) => "PROMPT_TUNING",
            Adapter::Ia3(_) => "IA3",
            Adapter::Bottleneck(_) => "BOTTLENECK",
        }
    }

    /// The method's name: `lora`, `pissa`, `dora`, `ia3`, `prompt_tuning`, `seq_bn`,
    /// `double_seq_bn`, or `bottleneck` for another bottleneck layout.
    pub fn method(&self) -> &'static str {
        match self {
            Adapter::Lora(l) if l.is_dora() => "dora",
            Adapter::Lora(l) if l.is_pissa() => "pissa",
            Adapter::Lora(_) => "lora",
            Adapter::Prompt(_) => "prompt_tuning",
            Adapter::Ia3(_) => "ia3",
            Adapter::Bottleneck(b) => match (b.config.mh_adapter, b.config.output_adapter, b.config.original_ln_before)
            {
                (false, true, true) => "seq_bn",
                (true, true, false) => "double_seq_bn",
                _ => "bottleneck",
            },
        }
    }

    /// Refuses `format` when this adapter cannot be exported as it, naming the method, the
    /// formats it has and why.
    pub fn check_export(&self, format: ExportFormat) -> Result<()> {
        if self.export_formats().contains(&format) {
            return Ok(());
        }
        let why = match format {
            ExportFormat::Gguf => "llama.cpp loads only plain LoRA adapters",
            ExportFormat::Peft => "PEFT has no bottleneck adapters",
            ExportFormat::AdapterHub => "AdapterHub's files hold bottleneck adapters only",
            ExportFormat::Merged => match self {
                Adapter::Bottleneck(_) => "it adds a small network with a non-linearity between the layers",
                _ => "it adds virtual tokens to every input, which no weight can hold",
            },
        };
        let has: Vec<&str> = self.export_formats().iter().map(|f| f.name()).collect();
        Err(err!(
            InvalidOptions,
            "a {} adapter cannot be exported as {} ({why}); it exports as {}",
            self.method(),
            format.name(),
            has.join(", ")
        ))
    }

    /// The formats this adapter can be exported as: GGUF only for plain LoRA (llama.cpp has no
    /// DoRA, IA3, prompt or bottleneck adapters), a merged model for methods that are linear in
    /// the weights (LoRA, PiSSA, DoRA, IA3).
    pub fn export_formats(&self) -> &'static [ExportFormat] {
        match self {
            Adapter::Lora(l) if l.is_dora() => &[ExportFormat::Peft, ExportFormat::Merged],
            Adapter::Lora(_) => &[ExportFormat::Peft, ExportFormat::Gguf, ExportFormat::Merged],
            Adapter::Ia3(_) => &[ExportFormat::Peft, ExportFormat::Merged],
            Adapter::Prompt(_) => &[ExportFormat::Peft],
            Adapter::Bottleneck(_) => &[ExportFormat::AdapterHub],
        }
    }

    /// The trainable tensors with their state-dict keys (PEFT's, or AdapterHub's for bottleneck
    /// adapters), in a fixed order. Vectors are held as 2-D rows or columns.
    pub fn params(&self) -> Vec<(String, Tensor<2>)> {
        match self {
            Adapter::Lora(l) => l
                .modules
                .iter()
                .flat_map(|m| {
                    let magnitude = m.magnitude.iter().map(|t| (peft_key(&m.path, "lora_magnitude_vector"), t.clone()));
                    [
                        (peft_key(&m.path, "lora_A.weight"), m.a.clone()),
                        (peft_key(&m.path, "lora_B.weight"), m.b.clone()),
                    ]
                    .into_iter()
                    .chain(magnitude)
                })
                .collect(),
            Adapter::Prompt(p) => vec![("prompt_embeddings".to_owned(), p.embeddings.clone())],
            Adapter::Ia3(a) => a.modules.iter().map(|m| (peft_key(&m.path, "ia3_l"), m.vector.clone())).collect(),
            Adapter::Bottleneck(b) => b.params(),
        }
    }

    /// Number of trainable values (what PEFT's `print_trainable_parameters` counts).
    pub fn trainable_parameters(&self) -> usize {
        self.params().iter().map(|(_, t)| t.dims().iter().product::<usize>()).sum()
    }

    /// The same adapter with new values for its trainable tensors (in [`Adapter::params`] order).
    pub fn with_params(&self, values: Vec<Tensor<2>>) -> Adapter {
        let mut values = values.into_iter();
        match self {
            Adapter::Lora(l) => {
                let mut l = l.clone();
                let mut next = || values.next().expect("one value per trainable tensor");
                for m in &mut l.modules {
                    m.a = next();
                    m.b = next();
                    if m.magnitude.is_some() {
                        m.magnitude = Some(next());
                    }
                }
                Adapter::Lora(l)
            }
            Adapter::Prompt(p) => Adapter::Prompt(PromptAdapter {
                embeddings: values.next().expect("one value per trainable tensor"),
                ..p.clone()
            }),
            Adapter::Ia3(a) => {
                let mut a = a.clone();
                for m in &mut a.modules {
                    m.vector = values.next().expect("one value per trainable tensor");
                }
                Adapter::Ia3(a)
            }
            Adapter::Bottleneck(b) => Adapter::Bottleneck(b.with_params(&mut values)),
        }
    }

    /// A copy whose trainable tensors are autodiff leaves, for one training step.
    pub fn tracked(&self) -> Adapter {
        self.with_params(self.params().into_iter().map(|(_, t)| t.autodiff().require_grad()).collect())
    }

    /// Enables dropout with masks drawn from `seed` (training), or disables it with `None`.
    pub fn set_training(&mut self, seed: Option<u64>) {
        if let Adapter::Lora(l) = self {
            l.set_training(seed);
        }
    }

    /// Final hidden states `[batch·(prefix+len), hidden]` of right-padded `ids` (`batch·len`).
    /// With a non-empty `cache`, the prompt-tuning prefix is already in it and is not added again.
    pub fn hidden(
        &self,
        lm: &CausalLm,
        ids: &[u32],
        batch: usize,
        key_mask: Option<&[u8]>,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor<2>> {
        let (embeds, mut ctx) = self.inputs(lm, ids, batch, key_mask, cache)?;
        let hidden = lm.hidden(embeds, &mut ctx, self.hooks());
        ctx.finish();
        Ok(hidden)
    }

    /// The input embeddings `[batch·(prefix+len), hidden]` of right-padded `ids` (the soft prompt
    /// in front of each row on a first pass) and the attention context they run under: the start
    /// of [`Adapter::hidden`], for callers that run the decoder layers one by one.
    pub fn inputs<'a>(
        &self,
        lm: &CausalLm,
        ids: &[u32],
        batch: usize,
        key_mask: Option<&[u8]>,
        cache: Option<&'a mut KvCache>,
    ) -> Result<(Tensor<2>, AttentionContext<'a>)> {
        let len = ids.len() / batch;
        let embeds = lm.embed(ids)?;
        let Adapter::Prompt(prompt) = self else {
            return Ok((embeds, AttentionContext::new(batch, len, key_mask, cache, lm.device())));
        };
        let first_pass = cache.as_ref().is_none_or(|c| c.is_empty());
        let n = if first_pass { prompt.len() } else { 0 };
        let embeds = if first_pass { prompt.prepend(embeds, batch, len) } else { embeds };
        let mask = key_mask.map(|m| prefixed_mask(m, batch, len, n));
        Ok((embeds, AttentionContext::new(batch, n + len, mask.as_deref(), cache, lm.device())))
    }

    /// What the adapter changes inside the decoder layers (nothing for prompt tuning).
    pub fn hooks(&self) -> &dyn LayerHooks {
        match self {
            Adapter::Lora(lora) => lora,
            Adapter::Ia3(ia3) => ia3,
            Adapter::Bottleneck(bottleneck) => bottleneck,
            Adapter::Prompt(_) => &NoAdapter,
        }
    }
}

/// A `[batch, len]` key mask with `n` ones in front of every row.
fn prefixed_mask(mask: &[u8], batch: usize, len: usize, n: usize) -> Vec<u8> {
    (0..batch).flat_map(|b| std::iter::repeat_n(1, n).chain(mask[b * len..(b + 1) * len].iter().copied())).collect()
}

/// Reads an adapter folder for `lm`, whichever library wrote it: PEFT (`adapter_model.safetensors`)
/// or AdapterHub (`adapter.safetensors`). Pickled weights (`adapter_model.bin`,
/// `pytorch_adapter.bin`) are refused with how to re-save them as safetensors.
pub async fn read_adapter(source: &dyn FileSource, lm: &CausalLm) -> Result<Adapter> {
    let folder = source.describe();
    if source.exists(files::WEIGHTS_FILE) {
        let config = source.read_text(files::CONFIG_FILE)?;
        return files::import(&config, &source.read(files::WEIGHTS_FILE)?, lm).await;
    }
    if source.exists(adapterhub::WEIGHTS_FILE) || source.exists(adapterhub::PICKLE_FILE) {
        return adapterhub::read_folder(source, lm).map(Adapter::Bottleneck);
    }
    if source.exists(files::PICKLE_FILE) {
        return Err(files::pickle_error(&format!("{folder}: {}", files::PICKLE_FILE)));
    }
    Err(err!(
        FileMissing,
        "{folder} holds no adapter: expected {} (PEFT) or {} (AdapterHub) beside {}",
        files::WEIGHTS_FILE,
        adapterhub::WEIGHTS_FILE,
        files::CONFIG_FILE
    ))
}
