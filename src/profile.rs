//! What a training step costs the host and the device, for benchmarks (`webtune bench` natively,
//! `engine.bench()` in a browser): kernel dispatches per step, per transformer layer and for the
//! optimizer, and (natively) host CPU milliseconds and wall milliseconds. In a browser the npm
//! engine adds what only the WebGPU API sees (submits, buffer creations, time waiting for mapped
//! buffers), as the test harness does (`tests/browser/webgpu-counters.mjs`).
//!
//! Dispatches are counted with CubeCL's launch observer (`cubecl::logging::LaunchObserver`),
//! which sees every kernel the process issues, on the issuing thread, before it reaches the
//! device: nothing else may run on the GPU while counting. Burn's fusion issues kernels lazily,
//! so each counted region ends by flushing the device's queue.
//! Submits and buffer creations are not observable natively without patching wgpu (its `counters`
//! feature reports live objects, not creations); the browser engine counts them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cubecl::logging::{LaunchObservation, LaunchObserver};
use serde::Serialize;

use crate::data::{Batch, Example};
use crate::err;
use crate::error::Result;
use crate::model::{CausalLm, LoadOptions, ModelConfig};
use crate::options::{Recompute, TrainingOptions};
use crate::peft::{Adapter, LoraAdapter, LoraConfig};
use crate::rng::Rng;
use crate::session::memory::MemoryEstimate;
use crate::session::{RunFacts, Storage};
use crate::train::{Grads, Schedule, TrainConfig, Trainer};

/// A benchmark's training run: LoRA r 8 on q/k/v/o of `lm`, on random token ids with every
/// position supervised, a constant learning rate and no shuffling, and its memory estimate.
pub struct LoraBench {
    pub trainer: Trainer,
    pub estimate: MemoryEstimate,
    /// The batch every step trains on (all batches have this shape).
    pub first_batch: Batch,
}

impl LoraBench {
    /// A run of `steps` steps of `batch_size × seq_len` tokens.
    pub async fn new(
        lm: Arc<CausalLm>,
        batch_size: usize,
        seq_len: usize,
        steps: usize,
        recompute: Recompute,
    ) -> Result<Self> {
        let options = TrainingOptions {
            targets: Some(["q_proj", "k_proj", "v_proj", "o_proj"].map(String::from).to_vec()),
            batch_size,
            max_len: seq_len,
            lr: Some(1e-4),
            recompute,
            ..TrainingOptions::default()
        };
        let estimate = RunFacts::planned(lm.shape(), Storage::of(&lm), &options)?.memory;
        let adapter = Adapter::Lora(LoraAdapter::init(&lm, options.lora_config(lm.config.architecture)?, 0).await?);
        let examples = random_examples(lm.config.vocab_size, batch_size * steps.max(1), seq_len);
        let config = TrainConfig {
            schedule: Schedule::Constant,
            max_steps: Some(steps.max(1)),
            shuffle: false,
            recompute_layers: estimate.recompute_layers,
            ..options.train_config()?
        };
        let first_batch = Batch::collate(&examples[..batch_size].iter().collect::<Vec<_>>(), 0);
        let trainer = Trainer::new(lm, adapter, examples, Vec::new(), config, 0)?;
        Ok(LoraBench { trainer, estimate, first_batch })
    }
}

/// `count` rows of `len` random ids below `vocab`, every position supervised.
fn random_examples(vocab: usize, count: usize, len: usize) -> Vec<Example> {
    let mut rng = Rng::new(0);
    (0..count)
        .map(|_| {
            let ids: Vec<u32> = (0..len).map(|_| rng.below(vocab) as u32).collect();
            Example { labels: ids.iter().map(|&i| i as i64).collect(), input_ids: ids, line: 0 }
        })
        .collect()
}

/// What a benchmark in the browser trains (`engine.bench(options)`, index.d.ts `BenchOptions`):
/// the loaded model, or a suggested model's shape with random weights.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct BenchOptions {
    /// A preset's name (`smollm2-135m`): its shape with random weights instead of the loaded model.
    pub shape: Option<String>,
    /// Decoder layers of the shape, fewer than the preset's for a quick run.
    pub layers: Option<usize>,
    pub batch_size: usize,
    pub seq_len: usize,
    /// Timed steps (after the warm-up).
    pub steps: usize,
    pub recompute: Recompute,
    /// Whether each step issues the next one's passes while the GPU finishes it, as training
    /// does (`Trainer::set_overlap`); `false` times the host's issuing with the GPU idle.
    pub overlap: bool,
    /// Whether steps replay the passes recorded for their batch shape, as training does
    /// (`Trainer::set_recording`); `false` issues them kernel by kernel.
    pub replay: bool,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            shape: None,
            layers: None,
            batch_size: 4,
            seq_len: 128,
            steps: 3,
            recompute: Recompute::Auto,
            overlap: true,
            replay: true,
        }
    }
}

/// How the kernels of a step divide: the forward and backward passes, what one transformer layer
/// adds to them (measured on 1- and 2-layer copies of the model), and what lies outside the
/// layers. The optimizer's are a whole step's minus the gradient passes'.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepShares {
    /// The forward and backward passes (loss included).
    pub gradient_dispatches: u64,
    /// What one more transformer layer adds to the forward and backward passes.
    pub dispatches_per_layer: u64,
    /// The forward and backward passes outside the layers: embedding, final norm, LM head, loss.
    pub dispatches_outside_layers: i64,
    /// Gradient norm, clipping and the AdamW update.
    pub optimizer_dispatches: u64,
}

/// Counts kernel launches while installed.
#[derive(Default)]
struct DispatchCounter(AtomicU64);

impl LaunchObserver for DispatchCounter {
    fn launched(&self, _kernel: &'static str) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts the kernels launched from now until the returned guard is finished.
pub struct Counting {
    counter: Arc<DispatchCounter>,
    observation: LaunchObservation,
}

impl Counting {
    pub fn start() -> Self {
        let counter = Arc::new(DispatchCounter::default());
        let observation = LaunchObservation::new(counter.clone());
        Counting { counter, observation }
    }

    /// Flushes the device's queue (fusion launches lazily) and returns the kernels launched.
    pub fn finish(self, device: &burn::tensor::Device) -> Result<u64> {
        device.flush().map_err(|e| err!(Gpu, "GPU flush failed: {e:?}"))?;
        drop(self.observation);
        Ok(self.counter.0.load(Ordering::Relaxed))
    }
}

/// Runs `f` and returns its result with the kernels it launched.
pub fn count_dispatches<T>(device: &burn::tensor::Device, f: impl FnOnce() -> T) -> Result<(T, u64)> {
    let counting = Counting::start();
    let value = f();
    Ok((value, counting.finish(device)?))
}

/// Forward and backward passes of the trainer's next step, issued one by one and counted (the
/// trainer does not move), and their gradients.
fn gradient_dispatches(trainer: &Trainer) -> Result<(u64, Grads)> {
    let device = trainer.model().device().clone();
    let (gradients, count) = count_dispatches(&device, || trainer.next_gradients())?;
    Ok((count, gradients?.grads))
}

/// Where the kernels of the trainer's steps go, issued one by one (what a replayed step runs too);
/// `seq_len` is its batches' length.
pub async fn step_shares(trainer: &Trainer, seq_len: usize) -> Result<StepShares> {
    let (gradient, grads) = gradient_dispatches(trainer)?;
    let device = trainer.model().device().clone();
    let (_, optimizer) = count_dispatches(&device, || trainer.unchanging_update(grads))?;
    let per_layer = gradient_dispatches_with_layers(trainer, 2, seq_len).await? as i64
        - gradient_dispatches_with_layers(trainer, 1, seq_len).await? as i64;
    let layers = trainer.model().config.num_layers as i64;
    Ok(StepShares {
        gradient_dispatches: gradient,
        dispatches_per_layer: per_layer.max(0) as u64,
        dispatches_outside_layers: gradient as i64 - layers * per_layer,
        optimizer_dispatches: optimizer,
    })
}

/// Forward and backward dispatches of a random `layers`-layer copy of the trainer's model (vocabulary
/// 512, the same LoRA configuration, batch shape and storage width).
async fn gradient_dispatches_with_layers(like: &Trainer, layers: usize, seq_len: usize) -> Result<u64> {
    let model = like.model();
    let config = ModelConfig { num_layers: layers, vocab_size: 512, ..model.config.clone() };
    let vocab = config.vocab_size;
    let load = LoadOptions { weights_dtype: model.report.stored_as(), ..LoadOptions::default() };
    let lm = Arc::new(CausalLm::random(config, model.device(), &load)?);
    let lora = match like.adapter() {
        Adapter::Lora(lora) => lora.config.clone(),
        _ => LoraConfig::default(),
    };
    let adapter = Adapter::Lora(LoraAdapter::init(&lm, lora, 0).await?);
    let examples = random_examples(vocab, like.config().batch_size, seq_len);
    let config = TrainConfig { max_steps: Some(1), shuffle: false, ..like.config().clone() };
    let trainer = Trainer::new(lm, adapter, examples, Vec::new(), config, 0)?;
    // Once to compile and plan (fusion decides its kernels on first sight of a graph), once counted.
    gradient_dispatches(&trainer)?;
    Ok(gradient_dispatches(&trainer)?.0)
}

/// Figures of one training step, measured natively (camelCase, as the browser's).
#[cfg(not(target_arch = "wasm32"))]
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepFigures {
    /// Every kernel of the step: forward, backward, gradient norm and clipping, optimizer update.
    pub dispatches: u64,
    /// The kernels the host launched one by one (CubeCL's launch observer): all of them, or for a
    /// step that replays its recorded passes ([`Trainer::recorded_shapes`]), those outside them.
    pub launched_dispatches: u64,
    /// Whether the step replayed its recorded passes.
    pub replayed: bool,
    #[serde(flatten)]
    pub shares: StepShares,
    /// CPU time the calling thread spent in the step (issuing work, and computing on a CPU backend).
    pub host_ms: f64,
    /// CPU time of the whole process in the step, every thread (a software GPU's and a CPU
    /// backend's workers included): on a shared machine, steadier than wall time.
    pub process_cpu_ms: f64,
    pub wall_ms: f64,
}

/// CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`) or of the process.
#[cfg(not(target_arch = "wasm32"))]
fn cpu_ms(clock: libc::clockid_t) -> f64 {
    let mut time = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec; both clocks exist on Linux and macOS.
    unsafe { libc::clock_gettime(clock, &mut time) };
    time.tv_sec as f64 * 1e3 + time.tv_nsec as f64 / 1e6
}

/// Runs the trainer's next step and counts it; `seq_len` is its batches' length.
#[cfg(not(target_arch = "wasm32"))]
pub fn lora_step(trainer: &mut Trainer, seq_len: usize) -> Result<StepFigures> {
    use std::time::Instant;
    let device = trainer.model().device().clone();
    let shares = burn::tensor::read_sync(step_shares(trainer, seq_len))?;
    // The step counted starts from gradients issued before it and issues the next step's, as
    // every step after a run's first does (`Trainer::step`).
    trainer.prefetch();
    let (wall, host, process) =
        (Instant::now(), cpu_ms(libc::CLOCK_THREAD_CPUTIME_ID), cpu_ms(libc::CLOCK_PROCESS_CPUTIME_ID));
    let (metrics, launched_dispatches) = count_dispatches(&device, || burn::tensor::read_sync(trainer.step()))?;
    device.sync().map_err(|e| err!(Gpu, "GPU sync failed: {e:?}"))?;
    let host_ms = cpu_ms(libc::CLOCK_THREAD_CPUTIME_ID) - host;
    let process_cpu_ms = cpu_ms(libc::CLOCK_PROCESS_CPUTIME_ID) - process;
    let wall_ms = wall.elapsed().as_secs_f64() * 1e3;
    metrics?;
    Ok(StepFigures {
        dispatches: shares.gradient_dispatches + shares.optimizer_dispatches,
        launched_dispatches,
        replayed: trainer.recorded_shapes() > 0,
        shares,
        host_ms: (host_ms * 10.0).round() / 10.0,
        process_cpu_ms: process_cpu_ms.round(),
        wall_ms: (wall_ms * 10.0).round() / 10.0,
    })
}
