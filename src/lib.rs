//! webtune: parameter-efficient fine-tuning (LoRA, PiSSA, DoRA, IA3, prompt tuning, bottleneck adapters) of small
//! causal language models on WebGPU, in the browser or natively. The core here is platform-neutral: `session` sets up
//! runs, evaluations and exports for both front ends, `web` (the wasm-bindgen surface) and the `webtune` command line
//! (`src/cli/`). `docs/ARCHITECTURE.md` describes the layers.

pub mod data;
pub mod device;
pub mod error;
pub mod generate;
pub mod kernels;
pub mod model;
pub mod options;
pub mod peft;
pub mod profile;
pub mod readback;
pub mod rng;
pub mod session;
pub mod train;
pub mod upload;
pub mod zip;

pub use error::{Error, ErrorCode, Result};

#[cfg(target_arch = "wasm32")]
pub mod web;
