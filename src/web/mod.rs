//! The wasm-bindgen surface: a thin, async layer that turns JS values into core calls and core
//! errors into JS `Error`s with a stable `code`. No logic lives here.

use std::cell::RefCell;

use burn::tensor::Device;
use js_sys::{Float32Array, Object, Reflect, Uint8Array, Uint32Array};
use wasm_bindgen::prelude::*;

use crate::error::Error;
use crate::model::files::FileSource;
use crate::model::{Model, NoAdapter};
use crate::{device, err, readback};

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

fn to_js<T: serde::Serialize>(value: &T) -> Result<JsValue, JsValue> {
    value.serialize(&serde_wasm_bindgen::Serializer::json_compatible()).map_err(|e| js_error(err!(InvalidOptions, "{e}")))
}

fn gpu() -> Result<Device, JsValue> {
    DEVICE.with(|d| d.borrow().clone()).ok_or_else(|| js_error(err!(Gpu, "call init() before using the GPU")))
}

/// Acquires the WebGPU device; resolves to `{name, backend, max_storage_buffer_binding_size,
/// max_buffer_size}`. Call once before anything else.
#[wasm_bindgen]
pub async fn init() -> Result<JsValue, JsValue> {
    let (device, info) = device::gpu_async().await.map_err(js_error)?;
    DEVICE.with(|d| *d.borrow_mut() = Some(device));
    to_js(&info)
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
        let bytes = value.dyn_into::<Uint8Array>().map_err(|_| err!(FileMissing, "{name} is missing from the selected files"))?;
        Ok(bytes.to_vec())
    }

    fn describe(&self) -> String {
        "the selected model files".to_owned()
    }
}

/// A loaded model (network on the GPU plus tokenizer).
#[wasm_bindgen]
pub struct WebModel {
    model: Model,
}

#[wasm_bindgen]
impl WebModel {
    /// Loads a model from `{ fileName: Uint8Array }` (config.json, model.safetensors or the
    /// sharded index and shards, tokenizer.json, tokenizer_config.json).
    pub async fn load(files: Object) -> Result<WebModel, JsValue> {
        let model = Model::load(&JsFiles { files }, &gpu()?).map_err(js_error)?;
        Ok(WebModel { model })
    }

    /// The parsed `config.json` as seen by webtune.
    pub fn info(&self) -> Result<JsValue, JsValue> {
        let c = &self.model.lm.config;
        to_js(&serde_json::json!({
            "architecture": c.architecture.name(),
            "vocab_size": c.vocab_size,
            "hidden_size": c.hidden_size,
            "num_layers": c.num_layers,
            "num_heads": c.num_heads,
            "num_kv_heads": c.num_kv_heads,
            "intermediate_size": c.intermediate_size,
            "tie_word_embeddings": c.tie_word_embeddings,
        }))
    }

    /// Token ids of `text`.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Uint32Array, JsValue> {
        let ids = self.model.tokenizer.encode(text, add_special_tokens).map_err(js_error)?;
        Ok(Uint32Array::from(ids.as_slice()))
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, JsValue> {
        self.model.tokenizer.decode(ids, skip_special_tokens).map_err(js_error)
    }

    /// Base-model logits `[ids.length, vocab]`, row-major.
    pub async fn logits(&self, ids: Vec<u32>) -> Result<Float32Array, JsValue> {
        let logits = self.model.lm.forward(&ids, 1, None, &NoAdapter).map_err(js_error)?;
        let values = readback::floats(logits).await.map_err(js_error)?;
        Ok(Float32Array::from(values.as_slice()))
    }
}
