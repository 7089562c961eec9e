//! The wasm-bindgen surface: a thin, async layer that turns JS values into core calls
//! (`crate::session` for everything a run, an evaluation or an export needs) and core errors into
//! JS `Error`s with a stable `code`. Results are serialised as the core defines them (camelCase,
//! the names of `npm/src/index.d.ts`). The hand-written JS layer (`npm/`) builds the public
//! engine API on top of these classes.

use std::cell::RefCell;
use std::rc::Rc;

use burn::tensor::Device;
use js_sys::{Float32Array, Object, Reflect, Uint8Array, Uint32Array};
use serde::Serialize;
use wasm_bindgen::prelude::*;

use crate::data;
use crate::error::Error;
use crate::generate::{Generation, SamplingOptions};
use crate::model::files::FileSource;
use crate::model::files::MemoryFiles;
use crate::model::{LoadOptions, Model};
use crate::options::TrainingOptions;
use crate::peft::files::{self as adapter_files, ModelCard};
use crate::peft::{Adapter, read_adapter};
use crate::session::presets::{PRESETS, Preset};
use crate::session::{self, DataFile, ExportFormat, RunFacts, Storage, TrainReport};
use crate::train::Trainer;
use crate::{device, err, readback, zip};

mod bench;
mod merged;

thread_local! {
    static DEVICE: RefCell<Option<Device>> = const { RefCell::new(None) };
}

#[wasm_bindgen(start)]
fn start() {
    // Run static constructors once. Without an explicit call the linker wraps every export in
    // a constructor call, which re-runs them on each JS→wasm call (seconds per training step).
    unsafe extern "C" {
        fn __wasm_call_ctors();
    }
    unsafe { __wasm_call_ctors() };
    console_error_panic_hook::set_once();
}

/// A JS `Error` whose `code` property is the core error's stable code.
fn js_error(e: Error) -> JsValue {
    let error = js_sys::Error::new(&e.message);
    let _ = Reflect::set(&error, &"code".into(), &e.code.as_str().into());
    error.into()
}

fn to_js<T: Serialize + ?Sized>(value: &T) -> Result<JsValue, JsValue> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|e| js_error(err!(InvalidOptions, "{e}")))
}

/// Reads a JS options object (`undefined` = all defaults). It goes through JSON so that serde
/// sees every key and `deny_unknown_fields` rejects misspelt options (`batch_size`).
fn from_js<T: serde::de::DeserializeOwned + Default>(value: JsValue, what: &str) -> Result<T, JsValue> {
    if value.is_undefined() || value.is_null() {
        return Ok(T::default());
    }
    let json: String = js_sys::JSON::stringify(&value)
        .map_err(|_| js_error(err!(InvalidOptions, "{what} must be a plain object")))?
        .into();
    crate::options::from_json(&json, what).map_err(js_error)
}

fn gpu() -> Result<Device, JsValue> {
    DEVICE.with(|d| d.borrow().clone()).ok_or_else(|| js_error(err!(Gpu, "call init() before using the GPU")))
}

/// Acquires the WebGPU device; resolves to its `GpuInfo` (`{name, backend,
/// maxStorageBufferBindingSize, maxBufferSize}`). Call once before anything else.
#[wasm_bindgen]
pub async fn init() -> Result<JsValue, JsValue> {
    let (device, info) = device::gpu_async().await.map_err(js_error)?;
    DEVICE.with(|d| *d.borrow_mut() = Some(device));
    to_js(&info)
}

/// The crate version, shown by the page.
#[wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}

/// The hub models the page suggests (`ModelPreset[]`), from their config.json alone.
#[wasm_bindgen(js_name = modelPresets)]
pub fn model_presets() -> Result<JsValue, JsValue> {
    to_js(&PRESETS.iter().map(Preset::info).collect::<Vec<_>>())
}

/// What training preset `name` with `options` would take on this GPU, loaded as `loadModel` loads
/// (`PresetFacts`: storage width, whether it fits the device's limits, the run's facts).
#[wasm_bindgen(js_name = presetFacts)]
pub fn preset_facts(name: &str, options: JsValue) -> Result<JsValue, JsValue> {
    let options: TrainingOptions = from_js(options, "training options")?;
    let load = LoadOptions::default();
    let info = crate::model::load::effective_device(&load, &gpu()?);
    to_js(&Preset::find(name).and_then(|p| p.facts(&options, &load, &info)).map_err(js_error)?)
}

/// The files of a model folder handed over from JS: `{ "config.json": Uint8Array, ... }`.
/// Each file is copied into wasm memory only when read, and dropped after use.
struct JsFiles {
    files: Object,
}

impl FileSource for JsFiles {
    fn exists(&self, name: &str) -> bool {
        Reflect::get(&self.files, &name.into()).is_ok_and(|v| v.is_instance_of::<Uint8Array>())
    }

    fn read(&self, name: &str) -> crate::Result<Vec<u8>> {
        let value = Reflect::get(&self.files, &name.into()).map_err(|_| err!(FileMissing, "{name} is missing"))?;
        let bytes = value
            .dyn_into::<Uint8Array>()
            .map_err(|_| err!(FileMissing, "{name} is missing from the selected files"))?;
        Ok(bytes.to_vec())
    }

    fn describe(&self) -> String {
        "the selected model files".to_owned()
    }

    fn size(&self, name: &str) -> crate::Result<u64> {
        Ok(self.bytes(name)?.length() as u64)
    }

    /// Copies only the range into wasm memory (a safetensors header, then one tensor at a time).
    fn read_range(&self, name: &str, start: u64, len: usize) -> crate::Result<Vec<u8>> {
        let bytes = self.bytes(name)?;
        let end = start
            .checked_add(len as u64)
            .filter(|&end| end <= bytes.length() as u64)
            .ok_or_else(|| err!(CorruptWeights, "{name} is shorter than its header says: the file is truncated"))?;
        Ok(bytes.subarray(start as u32, end as u32).to_vec())
    }
}

impl JsFiles {
    fn bytes(&self, name: &str) -> crate::Result<Uint8Array> {
        Reflect::get(&self.files, &name.into())
            .ok()
            .and_then(|v| v.dyn_into::<Uint8Array>().ok())
            .ok_or_else(|| err!(FileMissing, "{name} is missing from the selected files"))
    }
}

/// A loaded model (network on the GPU plus tokenizer).
#[wasm_bindgen]
pub struct WebModel {
    model: Rc<Model>,
}

#[wasm_bindgen]
impl WebModel {
    /// Loads a model from `{ fileName: Uint8Array }` (config.json, model.safetensors or the
    /// sharded index and shards, tokenizer.json, tokenizer_config.json). `options`:
    /// `{weightsDtype: "auto" | "f16" | "f32", maxBindingBytes}` (all optional).
    pub async fn load(files: Object, options: Option<Object>) -> Result<WebModel, JsValue> {
        let options: LoadOptions = from_js(options.map_or(JsValue::UNDEFINED, JsValue::from), "load options")?;
        let model = Model::load_with(&JsFiles { files }, &gpu()?, &options).map_err(js_error)?;
        Ok(WebModel { model: Rc::new(model) })
    }

    /// What webtune read from `config.json`, plus parameter counts and the LoRA-targetable layers
    /// (`ModelInfo` without the name the JS side adds).
    pub fn info(&self) -> Result<JsValue, JsValue> {
        to_js(&session::model_info(&self.model))
    }

    /// What training with `options` would train and need before any data is loaded
    /// (`RunFacts`: trainable parameters, adapted layers, a memory estimate).
    #[wasm_bindgen(js_name = runFacts)]
    pub fn run_facts(&self, options: JsValue) -> Result<JsValue, JsValue> {
        let options: TrainingOptions = from_js(options, "training options")?;
        to_js(&RunFacts::planned(self.model.lm.shape(), Storage::of(&self.model.lm), &options).map_err(js_error)?)
    }

    /// Token ids of `text`.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Uint32Array, JsValue> {
        let ids = self.model.tokenizer.encode(text, add_special_tokens).map_err(js_error)?;
        Ok(Uint32Array::from(ids.as_slice()))
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, JsValue> {
        self.model.tokenizer.decode(ids, skip_special_tokens).map_err(js_error)
    }

    /// Logits `[rows, vocab]` (row-major) of `ids` with `adapter` (`WebAdapter.base(model)` for the
    /// base model); prompt tuning adds its virtual-token rows in front.
    pub async fn logits(&self, ids: Vec<u32>, adapter: &WebAdapter) -> Result<Float32Array, JsValue> {
        let hidden = adapter.adapter.hidden(&self.model.lm, &ids, 1, None, None).map_err(js_error)?;
        let values = readback::floats(self.model.lm.logits(hidden)).await.map_err(js_error)?;
        Ok(Float32Array::from(values.as_slice()))
    }

    /// The first `maxRows` rows of a dataset file as the model will see them (template applied,
    /// supervised segments marked, bad rows with line numbers) and the whole file's report.
    #[wasm_bindgen(js_name = previewDataset)]
    pub fn preview_dataset(
        &self,
        file_name: &str,
        bytes: &[u8],
        options: JsValue,
        max_rows: usize,
    ) -> Result<JsValue, JsValue> {
        let options: TrainingOptions = from_js(options, "training options")?;
        let data = DataFile { name: file_name, bytes };
        to_js(&session::preview(&self.model, data, &options, max_rows).map_err(js_error)?)
    }

    /// `text` wrapped as one user turn in the model's chat template, ready to generate from.
    #[wasm_bindgen(js_name = chatPrompt)]
    pub fn chat_prompt(&self, text: &str) -> Result<String, JsValue> {
        data::chat_prompt(&self.model.tokenizer, text).map_err(js_error)
    }

    /// Streams a continuation of `prompt` with `adapter` (use `WebAdapter.base(model)` for the
    /// base model). `options`: `{temperature, topP, maxTokens, seed}`.
    pub fn generate(&self, prompt: &str, adapter: &WebAdapter, options: JsValue) -> Result<WebGeneration, JsValue> {
        let options: SamplingOptions = from_js(options, "sampling options")?;
        let ids = self.model.tokenizer.encode(prompt, true).map_err(js_error)?;
        let generation =
            Generation::new(self.model.lm.clone(), self.model.tokenizer.clone(), adapter.adapter.clone(), ids, options)
                .map_err(js_error)?;
        Ok(WebGeneration { generation })
    }
}

/// A streamed generation; call `next()` until it resolves to `null`.
#[wasm_bindgen]
pub struct WebGeneration {
    generation: Generation,
}

#[wasm_bindgen]
impl WebGeneration {
    /// The next `{id, text}` or `null` when finished (see `finishReason`).
    pub async fn next(&mut self) -> Result<JsValue, JsValue> {
        match self.generation.next().await.map_err(js_error)? {
            Some(token) => to_js(&token),
            None => Ok(JsValue::NULL),
        }
    }

    /// `"eos"`, `"length"`, `"context"`, or `undefined` while running.
    #[wasm_bindgen(getter, js_name = finishReason)]
    pub fn finish_reason(&self) -> Result<JsValue, JsValue> {
        match self.generation.finish_reason() {
            Some(reason) => to_js(&reason),
            None => Ok(JsValue::UNDEFINED),
        }
    }

    /// All generated text so far.
    pub fn text(&self) -> Result<String, JsValue> {
        self.generation.text().map_err(js_error)
    }
}

/// An adapter: a snapshot of training, an imported PEFT adapter, or none (the base model).
#[wasm_bindgen]
pub struct WebAdapter {
    adapter: Adapter,
    model: Rc<Model>,
}

#[wasm_bindgen]
impl WebAdapter {
    /// No adapter: generate or evaluate with the base model.
    pub fn base(model: &WebModel) -> WebAdapter {
        WebAdapter { adapter: Adapter::none(&model.model.lm), model: model.model.clone() }
    }

    /// Reads a PEFT adapter (`adapter_config.json` text and `adapter_model.safetensors` bytes).
    #[wasm_bindgen(js_name = import)]
    pub async fn import_peft(model: &WebModel, config_json: &str, weights: &[u8]) -> Result<WebAdapter, JsValue> {
        let adapter = adapter_files::import(config_json, weights, &model.model.lm).await.map_err(js_error)?;
        Ok(WebAdapter { adapter, model: model.model.clone() })
    }

    /// Reads an adapter folder handed over as `{ fileName: Uint8Array }`: PEFT's files or
    /// AdapterHub's (`adapter_config.json` + `adapter.safetensors`); pickles are refused.
    #[wasm_bindgen(js_name = importFiles)]
    pub async fn import_files(model: &WebModel, files: Object) -> Result<WebAdapter, JsValue> {
        let mut folder = MemoryFiles::new("the selected adapter files");
        for name in Object::keys(&files).iter().filter_map(|k| k.as_string()) {
            if let Ok(bytes) = Reflect::get(&files, &name.as_str().into())?.dyn_into::<Uint8Array>() {
                folder.insert(&name, bytes.to_vec());
            }
        }
        let adapter = read_adapter(&folder, &model.model.lm).await.map_err(js_error)?;
        Ok(WebAdapter { adapter, model: model.model.clone() })
    }

    /// `AdapterInfo`: `{peftType, method, trainableParameters, exportFormats}`.
    pub fn info(&self) -> Result<JsValue, JsValue> {
        to_js(&session::adapter_info(&self.adapter))
    }

    /// The adapter's files. `format`: `"peft"` → `{ "adapter_model.safetensors", "adapter_config.json",
    /// "README.md", "adapter.zip" }` (the zip holds the first three); `"adapterhub"` →
    /// `{ "adapter.safetensors", "adapter_config.json", "adapter.zip" }`; `"gguf"` → `{ "adapter.gguf" }`
    /// for llama.cpp's `--lora`. A PiSSA adapter is written as a plain LoRA for the original base
    /// unless `pissaAsLora` is false.
    pub async fn export(
        &self,
        format: &str,
        base_model: &str,
        pissa_as_lora: bool,
        card: JsValue,
    ) -> Result<Object, JsValue> {
        let card: ModelCard = from_js(card, "model card")?;
        let format: ExportFormat = format.parse().map_err(js_error)?;
        let mut files = session::export(&self.model, &self.adapter, format, base_model, pissa_as_lora, &card)
            .await
            .map_err(js_error)?;
        if matches!(format, ExportFormat::Peft | ExportFormat::AdapterHub) {
            // One download for the page: the same files in a zip.
            let archive = zip::store(&files.iter().map(|(n, b)| (*n, b.as_slice())).collect::<Vec<_>>());
            files.push(("adapter.zip", archive));
        }
        let out = Object::new();
        for (name, bytes) in files {
            Reflect::set(&out, &name.into(), &Uint8Array::from(bytes.as_slice()))?;
        }
        Ok(out)
    }

    /// Mean token loss of this adapter on a dataset file (`session::evaluate`, as `webtune eval`).
    pub async fn evaluate(&self, file_name: &str, bytes: &[u8], options: JsValue) -> Result<f64, JsValue> {
        let options: TrainingOptions = from_js(options, "training options")?;
        let data = DataFile { name: file_name, bytes };
        let evaluation = session::evaluate(&self.model, &self.adapter, data, &options).await.map_err(js_error)?;
        Ok(evaluation.loss)
    }
}

/// A training run over a dataset with the options of `TrainingOptions`.
#[wasm_bindgen]
pub struct WebTrainer {
    trainer: Trainer,
    model: Rc<Model>,
    report: TrainReport,
}

#[wasm_bindgen]
impl WebTrainer {
    /// Prepares training (`session::prepare`): parses and tokenises the data (an eval file, or
    /// `evalSplit` of the training rows), initialises the adapter (or continues `initAdapter`).
    pub async fn create(
        model: &WebModel,
        train_name: &str,
        train_bytes: &[u8],
        eval_name: Option<String>,
        eval_bytes: Option<Vec<u8>>,
        options: JsValue,
        init_adapter: Option<WebAdapter>,
    ) -> Result<WebTrainer, JsValue> {
        let options: TrainingOptions = from_js(options, "training options")?;
        let train = DataFile { name: train_name, bytes: train_bytes };
        let eval = match (&eval_name, &eval_bytes) {
            (Some(name), Some(bytes)) => Some(DataFile { name, bytes }),
            _ => None,
        };
        let run = session::prepare(&model.model, train, eval, &options, init_adapter.map(|a| a.adapter))
            .await
            .map_err(js_error)?;
        Ok(WebTrainer { trainer: run.trainer, model: model.model.clone(), report: run.report })
    }

    /// What setting up the run found (`TrainReport`: `{train, eval, trainExamples, evalExamples,
    /// facts}`).
    pub fn report(&self) -> Result<JsValue, JsValue> {
        to_js(&self.report)
    }

    /// One optimizer step; resolves to its `StepMetrics` (`{step, totalSteps, epoch, loss, lr,
    /// gradNorm, tokens, supervisedTokens, evalLoss?, earlyStopped?}`).
    pub async fn step(&mut self) -> Result<JsValue, JsValue> {
        let metrics = self.trainer.step().await.map_err(js_error)?;
        to_js(&metrics)
    }

    pub async fn evaluate(&self) -> Result<f64, JsValue> {
        self.trainer.evaluate().await.map_err(js_error)
    }

    /// Compiles the GPU pipelines of every batch shape the run can meet (`Trainer::warm_up`), so
    /// that no step waits for shader compilation; changes nothing in the run. Resolves to the
    /// number of shapes warmed.
    #[wasm_bindgen(js_name = warmUp)]
    pub async fn warm_up(&mut self) -> Result<usize, JsValue> {
        self.trainer.warm_up().await.map_err(js_error)
    }

    /// Diagnostics: the gradients the next step will apply (before clipping), keyed by PEFT
    /// tensor name: `{ "base_model.model....lora_A.weight": Float32Array }`.
    #[wasm_bindgen(js_name = nextGradients)]
    pub async fn next_gradients(&self) -> Result<Object, JsValue> {
        let gradients = self.trainer.next_gradients().map_err(js_error)?;
        let out = Object::new();
        let adapter = self.trainer.adapter();
        for ((key, _), grad) in adapter.params().into_iter().zip(gradients.grads.per_tensor(adapter)) {
            let values = readback::floats(grad).await.map_err(js_error)?;
            Reflect::set(&out, &key.into(), &Float32Array::from(values.as_slice()))?;
        }
        Ok(out)
    }

    #[wasm_bindgen(getter, js_name = isDone)]
    pub fn is_done(&self) -> bool {
        self.trainer.is_done()
    }

    #[wasm_bindgen(getter, js_name = stepsDone)]
    pub fn steps_done(&self) -> usize {
        self.trainer.steps_done()
    }

    #[wasm_bindgen(getter, js_name = totalSteps)]
    pub fn total_steps(&self) -> usize {
        self.trainer.total_steps()
    }

    #[wasm_bindgen(getter, js_name = bestEvalLoss)]
    pub fn best_eval_loss(&self) -> Option<f64> {
        self.trainer.best_eval_loss()
    }

    /// The full training state after the last step, to resume exactly.
    pub async fn checkpoint(&self) -> Result<Uint8Array, JsValue> {
        let bytes = self.trainer.checkpoint().await.map_err(js_error)?;
        Ok(Uint8Array::from(bytes.as_slice()))
    }

    /// Continues from a checkpoint of the same run (same model, data and options).
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), JsValue> {
        self.trainer.restore(bytes).map_err(js_error)
    }

    /// A snapshot of the current adapter (for generation, evaluation or export).
    pub fn adapter(&self) -> WebAdapter {
        WebAdapter { adapter: self.trainer.adapter().clone(), model: self.model.clone() }
    }
}
