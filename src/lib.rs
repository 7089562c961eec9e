//! webtune: parameter-efficient fine-tuning (LoRA, PiSSA, prompt tuning) of small causal language
//! models on WebGPU, in the browser or natively. The core here is platform-neutral; `web` is only
//! the wasm-bindgen surface over it.

pub mod device;
pub mod error;
pub mod model;
pub mod readback;

pub use error::{Error, ErrorCode, Result};
