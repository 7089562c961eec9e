//! The merged-model export for JS: `WebAdapter.merged` plans a [`MergedModel`] over the base
//! model's files, which JS hands over as sizes plus a synchronous range reader (`Blob.slice` through
//! `FileReaderSync` in a worker, or `subarray` of bytes it holds), and `WebMergedModel.next`
//! yields the output one piece at a time, so JS can write it to disk as it comes.

use js_sys::{Function, Object, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;

use super::{WebAdapter, js_error, to_js};
use crate::err;
use crate::model::files::FileSource;
use crate::peft::merge::{MAX_SHARD_BYTES, MergedModel};

/// The base model's files: `sizes` is `{ name: bytes }`, `read_range(name, offset, length)`
/// returns a `Uint8Array` synchronously.
struct JsRangeFiles {
    sizes: Object,
    read_range: Function,
}

impl FileSource for JsRangeFiles {
    fn exists(&self, name: &str) -> bool {
        Reflect::get(&self.sizes, &name.into()).is_ok_and(|v| v.as_f64().is_some())
    }

    fn read(&self, name: &str) -> crate::Result<Vec<u8>> {
        let size = self.size(name)?;
        let len = usize::try_from(size).map_err(|_| err!(Io, "{name} is too large to read at once"))?;
        self.read_range(name, 0, len)
    }

    fn describe(&self) -> String {
        "the base model's files".to_owned()
    }

    fn size(&self, name: &str) -> crate::Result<u64> {
        Reflect::get(&self.sizes, &name.into())
            .ok()
            .and_then(|v| v.as_f64())
            .map(|s| s as u64)
            .ok_or_else(|| err!(FileMissing, "the base model's {name} is missing"))
    }

    fn read_range(&self, name: &str, offset: u64, len: usize) -> crate::Result<Vec<u8>> {
        let read = self.read_range.call3(&JsValue::NULL, &name.into(), &(offset as f64).into(), &(len as f64).into());
        let bytes = read
            .ok()
            .and_then(|v| v.dyn_into::<Uint8Array>().ok())
            .ok_or_else(|| err!(Io, "cannot read {len} bytes at {offset} of the base model's {name}"))?;
        if bytes.length() as usize != len {
            return Err(err!(
                CorruptWeights,
                "the base model's {name} ends before byte {} (truncated?)",
                offset + len as u64
            ));
        }
        Ok(bytes.to_vec())
    }
}

/// A merged model being produced: `files()` lists the output, `next()` yields its pieces.
#[wasm_bindgen]
pub struct WebMergedModel {
    merged: MergedModel,
}

#[wasm_bindgen]
impl WebAdapter {
    /// Plans the base model this adapter belongs to with the adapter folded in (LoRA, PiSSA, DoRA,
    /// IA3): `sizes` `{ name: bytes }` of the base's files, `readRange(name, offset, length)` a
    /// synchronous reader of them. Checks everything (method, files, dtypes) before any output.
    pub fn merged(&self, sizes: Object, read_range: Function) -> Result<WebMergedModel, JsValue> {
        let source = Box::new(JsRangeFiles { sizes, read_range });
        let merged =
            MergedModel::new(self.model.lm.clone(), self.adapter.clone(), source, MAX_SHARD_BYTES).map_err(js_error)?;
        Ok(WebMergedModel { merged })
    }
}

#[wasm_bindgen]
impl WebMergedModel {
    /// The files the export writes: `[{ name, size }]`.
    pub fn files(&self) -> Result<JsValue, JsValue> {
        let files: Vec<serde_json::Value> = self
            .merged
            .files()
            .into_iter()
            .map(|(name, size)| serde_json::json!({ "name": name, "size": size }))
            .collect();
        to_js(&files)
    }

    /// The next piece `{ file, offset, fileLength, bytes }`, or `undefined` when done.
    pub async fn next(&mut self) -> Result<JsValue, JsValue> {
        let Some(chunk) = self.merged.next_chunk().await.map_err(js_error)? else {
            return Ok(JsValue::UNDEFINED);
        };
        let out = Object::new();
        Reflect::set(&out, &"file".into(), &chunk.file.into())?;
        Reflect::set(&out, &"offset".into(), &(chunk.offset as f64).into())?;
        Reflect::set(&out, &"fileLength".into(), &(chunk.file_len as f64).into())?;
        Reflect::set(&out, &"bytes".into(), &Uint8Array::from(chunk.bytes.as_slice()))?;
        Ok(out.into())
    }
}
