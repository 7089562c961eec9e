//! What a training step costs the host and the device, for benchmarks (`webtune bench`): kernel
//! dispatches per step, per transformer layer and for the optimizer, host CPU milliseconds and
//! wall milliseconds. Natively only; in a browser the same figures are counted at the WebGPU API
//! by the test harness (`tests/browser/webgpu-counters.mjs`).
//!
//! Dispatches are counted with CubeCL's launch observer (`cubecl::logging::LaunchObserver`),
//! which sees every kernel the process issues, on the issuing thread, before it reaches the
//! device: nothing else may run on the GPU while counting. Burn's fusion issues kernels lazily,
//! so each counted region ends with a device sync.
//! Submits and buffer creations are not observable natively without patching wgpu (its `counters`
//! feature reports live objects, not creations); the browser harness counts them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use cubecl::logging::{LaunchObservation, LaunchObserver};

use crate::data::Example;
use crate::err;
use crate::error::Result;
use crate::model::{CausalLm, LoadOptions, ModelConfig};
use crate::peft::{Adapter, LoraAdapter, LoraConfig};
use crate::rng::Rng;
use crate::train::{TrainConfig, Trainer};

/// Figures of one training step.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StepFigures {
    /// Every kernel of the step: forward, backward, gradient norm and clipping, optimizer update.
    pub dispatches: u64,
    /// The forward and backward passes (loss included).
    pub gradient_dispatches: u64,
    /// Gradient norm, clipping and the AdamW update.
    pub optimizer_dispatches: u64,
    /// What one more transformer layer adds to the forward and backward passes.
    pub dispatches_per_layer: u64,
    /// The forward and backward passes outside the layers: embedding, final norm, LM head, loss.
    pub dispatches_outside_layers: i64,
    /// CPU time the calling thread spent in the step (issuing work, and computing on a CPU backend).
    pub host_ms: f64,
    /// CPU time of the whole process in the step, every thread (a software GPU's and a CPU
    /// backend's workers included): on a shared machine, steadier than wall time.
    pub process_cpu_ms: f64,
    pub wall_ms: f64,
}

/// Counts kernel launches while installed.
#[derive(Default)]
struct DispatchCounter(AtomicU64);

impl LaunchObserver for DispatchCounter {
    fn launched(&self, _kernel: &'static str) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs `f`, waits for the device, and returns its result with the kernels it launched.
pub fn count_dispatches<T>(device: &burn::tensor::Device, f: impl FnOnce() -> T) -> Result<(T, u64)> {
    let counter = Arc::new(DispatchCounter::default());
    let observation = LaunchObservation::new(counter.clone());
    let value = f();
    device.sync().map_err(|e| err!(Gpu, "GPU sync failed: {e:?}"))?;
    drop(observation);
    Ok((value, counter.0.load(Ordering::Relaxed)))
}

/// CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`) or of the process.
fn cpu_ms(clock: libc::clockid_t) -> f64 {
    let mut time = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec; both clocks exist on Linux and macOS.
    unsafe { libc::clock_gettime(clock, &mut time) };
    time.tv_sec as f64 * 1e3 + time.tv_nsec as f64 / 1e6
}

/// Forward and backward passes of the trainer's next step, counted (the trainer does not move).
fn gradient_dispatches(trainer: &Trainer) -> Result<u64> {
    let device = trainer.model().device().clone();
    let (gradients, count) = count_dispatches(&device, || trainer.next_gradients())?;
    gradients?;
    Ok(count)
}

/// Runs the trainer's next step and counts it; `batch_size × seq_len` is the batch shape, used to
/// measure one layer's share on 1- and 2-layer copies of the model (same shapes, small vocabulary).
pub fn lora_step(trainer: &mut Trainer, seq_len: usize) -> Result<StepFigures> {
    let device = trainer.model().device().clone();
    let gradient_dispatches = gradient_dispatches(trainer)?;
    let (wall, host, process) =
        (Instant::now(), cpu_ms(libc::CLOCK_THREAD_CPUTIME_ID), cpu_ms(libc::CLOCK_PROCESS_CPUTIME_ID));
    let (metrics, dispatches) = count_dispatches(&device, || burn::tensor::read_sync(trainer.step()))?;
    let host_ms = cpu_ms(libc::CLOCK_THREAD_CPUTIME_ID) - host;
    let process_cpu_ms = cpu_ms(libc::CLOCK_PROCESS_CPUTIME_ID) - process;
    let wall_ms = wall.elapsed().as_secs_f64() * 1e3;
    metrics?;
    let per_layer = gradient_dispatches_with_layers(trainer, 2, seq_len)? as i64
        - gradient_dispatches_with_layers(trainer, 1, seq_len)? as i64;
    let layers = trainer.model().config.num_layers as i64;
    Ok(StepFigures {
        dispatches,
        gradient_dispatches,
        optimizer_dispatches: dispatches.saturating_sub(gradient_dispatches),
        dispatches_per_layer: per_layer.max(0) as u64,
        dispatches_outside_layers: gradient_dispatches as i64 - layers * per_layer,
        host_ms: (host_ms * 10.0).round() / 10.0,
        process_cpu_ms: process_cpu_ms.round(),
        wall_ms: (wall_ms * 10.0).round() / 10.0,
    })
}

/// Forward and backward dispatches of a random `layers`-layer copy of the trainer's model (vocabulary
/// 512, the same LoRA configuration and batch shape).
fn gradient_dispatches_with_layers(like: &Trainer, layers: usize, seq_len: usize) -> Result<u64> {
    let device = like.model().device();
    let config = ModelConfig { num_layers: layers, vocab_size: 512, ..like.model().config.clone() };
    let vocab = config.vocab_size;
    let lm = Arc::new(CausalLm::random(config, device, &LoadOptions::default())?);
    let lora = match like.adapter() {
        Adapter::Lora(lora) => lora.config.clone(),
        _ => LoraConfig::default(),
    };
    let adapter = Adapter::Lora(burn::tensor::read_sync(LoraAdapter::init(&lm, lora, 0))?);
    let batch_size = like.config().batch_size;
    let mut rng = Rng::new(0);
    let examples: Vec<Example> = (0..batch_size)
        .map(|_| {
            let ids: Vec<u32> = (0..seq_len).map(|_| rng.below(vocab) as u32).collect();
            Example { labels: ids.iter().map(|&i| i as i64).collect(), input_ids: ids, line: 0 }
        })
        .collect();
    let config = TrainConfig { max_steps: Some(1), shuffle: false, ..like.config().clone() };
    let trainer = Trainer::new(lm, adapter, examples, Vec::new(), config, 0)?;
    // Once to compile and plan (fusion decides its kernels on first sight of a graph), once counted.
    gradient_dispatches(&trainer)?;
    gradient_dispatches(&trainer)
}
