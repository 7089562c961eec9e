//! webtune: parameter-efficient fine-tuning (LoRA, PiSSA, prompt tuning) of small causal language
//! models on WebGPU, in the browser or natively. The core here is platform-neutral; `web` is only
//! the wasm-bindgen surface over it.

pub mod data;
pub mod device;
pub mod error;
pub mod generate;
pub mod kernels;
pub mod model;
pub mod options;
pub mod peft;
#[cfg(not(target_arch = "wasm32"))]
pub mod profile;
pub mod readback;
pub mod rng;
pub mod train;
pub mod zip;

pub use error::{Error, ErrorCode, Result};

#[cfg(target_arch = "wasm32")]
pub mod web;
