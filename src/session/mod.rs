//! Setting up what a user asks for, once for every front end: a training run from a model, data
//! files, options and an optional starting adapter; an evaluation; a dataset preview; an export.
//! The CLI (`src/cli/`) and the wasm binding (`src/web/`) only read files or convert JS values,
//! call these, and present the results. Everything here that crosses the wasm boundary is
//! serialised with the camelCase names `npm/src/index.d.ts` declares.

pub mod facts;
pub mod memory;
pub mod presets;

use serde::Serialize;

use crate::data::{self, DatasetReport, PreviewRow, load_dataset, split_eval};
use crate::err;
use crate::error::Result;
use crate::model::{LoadReport, Model};
use crate::options::TrainingOptions;
pub use crate::peft::ExportFormat;
use crate::peft::files::{self as adapter_files, ModelCard};
use crate::peft::{Adapter, adapterhub, default_targets, gguf};
use crate::train::checkpoint::describe_bytes;
use crate::train::{self, Trainer};
pub use facts::{AdaptedLayer, RunFacts};
pub use memory::{MemoryEstimate, Storage};

/// A data file as the user gave it: its name (the extension picks the format; errors cite it)
/// and its bytes.
#[derive(Clone, Copy, Debug)]
pub struct DataFile<'a> {
    pub name: &'a str,
    pub bytes: &'a [u8],
}

/// What setting up a run found: `WebTrainer.report()` and the CLI's summary.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrainReport {
    pub train: DatasetReport,
    /// `None` when the eval set is split off the training data (`evalSplit`).
    pub eval: Option<DatasetReport>,
    /// Examples left for training after any eval split.
    pub train_examples: usize,
    pub eval_examples: usize,
    pub facts: RunFacts,
    /// The adapter being trained: its method and export formats.
    pub adapter: AdapterInfo,
}

/// A run ready to train.
pub struct Run {
    pub trainer: Trainer,
    pub report: TrainReport,
}

/// Sets up a training run: reads and tokenises `train` (and `eval`, or holds out `evalSplit` of
/// the training rows), starts from `adapter` or a fresh one as `options` say, and records in the
/// trainer what its checkpoints must match (data files, options that shape the examples).
pub async fn prepare(
    model: &Model,
    train: DataFile<'_>,
    eval: Option<DataFile<'_>>,
    options: &TrainingOptions,
    adapter: Option<Adapter>,
) -> Result<Run> {
    let mut config = options.train_config()?;
    let data_options = options.data_options();
    let train_set = load_dataset(train.name, train.bytes, &model.tokenizer, &data_options)?;
    let (train_examples, eval_examples, eval_report) = match eval {
        Some(file) => {
            let eval_set = load_dataset(file.name, file.bytes, &model.tokenizer, &data_options)?;
            (train_set.examples, eval_set.examples, Some(eval_set.report))
        }
        None => {
            let (train, eval) = split_eval(train_set.examples, options.eval_split, options.seed);
            (train, eval, None)
        }
    };
    let adapter = match adapter {
        Some(adapter) => adapter,
        None => options.init_adapter(model).await?,
    };
    let facts = RunFacts::of_run(&model.lm, &adapter, &train_examples, options.batch_size, options.recompute);
    config.recompute_layers = facts.memory.recompute_layers;
    let report = TrainReport {
        train: train_set.report,
        eval: eval_report,
        train_examples: train_examples.len(),
        eval_examples: eval_examples.len(),
        facts,
        adapter: adapter_info(&adapter),
    };
    let mut trainer = Trainer::new(model.lm.clone(), adapter, train_examples, eval_examples, config, model.pad_id())?;
    trainer.identify("trainFile", describe_bytes(train.bytes));
    if let Some(file) = eval {
        trainer.identify("evalFile", describe_bytes(file.bytes));
    }
    trainer.identify("maxLen", options.max_len);
    trainer.identify("template", options.template.as_deref().unwrap_or("(default)"));
    trainer.identify("skipBadRows", options.skip_bad_rows);
    trainer.identify("evalSplit", options.eval_split);
    Ok(Run { trainer, report })
}

/// What evaluating an adapter on a dataset found.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Evaluation {
    /// Mean cross-entropy per supervised token.
    pub loss: f64,
    pub perplexity: f64,
    pub report: DatasetReport,
}

/// Evaluates `adapter` (`Adapter::none` for the base model) on a dataset file, with the same label
/// masks as training and eval batches of `options.batch_size`.
pub async fn evaluate(
    model: &Model,
    adapter: &Adapter,
    data: DataFile<'_>,
    options: &TrainingOptions,
) -> Result<Evaluation> {
    let dataset = load_dataset(data.name, data.bytes, &model.tokenizer, &options.data_options())?;
    let loss = train::evaluate(&model.lm, adapter, &dataset.examples, options.batch_size, model.pad_id()).await?;
    Ok(Evaluation { loss, perplexity: loss.exp(), report: dataset.report })
}

/// The first rows of a dataset file as the model will see them, and the whole file's report.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DatasetPreview {
    pub rows: Vec<PreviewRow>,
    /// `None` when no row is usable.
    pub report: Option<DatasetReport>,
}

/// Previews `data` as `options` would read it; malformed rows are shown (with their reason), not fatal.
pub fn preview(
    model: &Model,
    data: DataFile<'_>,
    options: &TrainingOptions,
    max_rows: usize,
) -> Result<DatasetPreview> {
    let data_options = crate::data::DataOptions { skip_bad_rows: true, ..options.data_options() };
    let rows = data::preview(data.name, data.bytes, &model.tokenizer, &data_options, max_rows)?;
    let report = load_dataset(data.name, data.bytes, &model.tokenizer, &data_options).map(|d| d.report).ok();
    Ok(DatasetPreview { rows, report })
}

/// What webtune read from a model folder: `WebModel.info()`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelInfo {
    pub architecture: &'static str,
    /// Parameters in the weight files (embeddings once when tied).
    pub parameters: usize,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub intermediate_size: usize,
    pub max_positions: usize,
    pub tie_word_embeddings: bool,
    /// Names of the linear layers LoRA can target (`q_proj`), sorted.
    pub linear_layers: Vec<String>,
    /// PEFT's default LoRA targets for the architecture.
    pub default_targets: Vec<String>,
    pub has_chat_template: bool,
    /// How the weights sit on the device: storage width and why, bytes, split tables.
    pub weights: LoadReport,
}

pub fn model_info(model: &Model) -> ModelInfo {
    let c = &model.lm.config;
    let linear_layers = model.lm.shape().linear_names().into_iter().map(str::to_owned).collect();
    ModelInfo {
        architecture: c.architecture.name(),
        parameters: model.lm.parameter_count(),
        vocab_size: c.vocab_size,
        hidden_size: c.hidden_size,
        num_layers: c.num_layers,
        num_heads: c.num_heads,
        num_kv_heads: c.num_kv_heads,
        head_dim: c.head_dim,
        intermediate_size: c.intermediate_size,
        max_positions: c.max_positions,
        tie_word_embeddings: c.tie_word_embeddings,
        linear_layers,
        default_targets: default_targets(c.architecture),
        has_chat_template: model.tokenizer.chat_template.is_some(),
        weights: model.lm.report.clone(),
    }
}

/// What an adapter is: `WebAdapter.info()`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdapterInfo {
    /// PEFT's `peft_type`: `LORA`, `PROMPT_TUNING`, `IA3`, or `BOTTLENECK` (AdapterHub's).
    pub peft_type: &'static str,
    /// [`Adapter::method`]: `lora`, `pissa`, `dora`, `ia3`, `prompt_tuning`, `seq_bn`, `double_seq_bn`.
    pub method: &'static str,
    pub trainable_parameters: usize,
    /// What it can be exported as ([`Adapter::export_formats`]).
    pub export_formats: &'static [ExportFormat],
}

pub fn adapter_info(adapter: &Adapter) -> AdapterInfo {
    AdapterInfo {
        peft_type: adapter.peft_type(),
        method: adapter.method(),
        trainable_parameters: adapter.trainable_parameters(),
        export_formats: adapter.export_formats(),
    }
}

/// The adapter's files (name, bytes) in `format`, one the adapter has
/// ([`Adapter::export_formats`]). `base_model` becomes PEFT's `base_model_name_or_path` (AdapterHub's
/// `model_name`); a PiSSA adapter is written as a plain LoRA for the original base when
/// `pissa_as_lora` (GGUF always is). A merged model is not a few files in memory: it is streamed
/// with [`crate::peft::merge::MergedModel`].
pub async fn export(
    model: &Model,
    adapter: &Adapter,
    format: ExportFormat,
    base_model: &str,
    pissa_as_lora: bool,
    card: &ModelCard,
) -> Result<Vec<(&'static str, Vec<u8>)>> {
    adapter.check_export(format)?;
    Ok(match (format, adapter) {
        (ExportFormat::Peft, _) => {
            let saved = adapter_files::export(adapter, base_model, pissa_as_lora, card).await?;
            vec![
                (adapter_files::WEIGHTS_FILE, saved.weights),
                (adapter_files::CONFIG_FILE, saved.config_json.into_bytes()),
                (adapter_files::README_FILE, saved.readme.into_bytes()),
            ]
        }
        (ExportFormat::AdapterHub, Adapter::Bottleneck(bottleneck)) => {
            let saved = adapterhub::export(bottleneck, base_model).await?;
            vec![(adapterhub::CONFIG_FILE, saved.config_json.into_bytes()), (adapterhub::WEIGHTS_FILE, saved.weights)]
        }
        (ExportFormat::Gguf, _) => vec![("adapter.gguf", gguf::export_gguf(adapter, &model.lm.config).await?)],
        // `check_export` let only a merged model through here.
        (ExportFormat::AdapterHub | ExportFormat::Merged, _) => {
            return Err(err!(InvalidOptions, "a merged model is streamed with MergedModel, not exported as files"));
        }
    })
}
