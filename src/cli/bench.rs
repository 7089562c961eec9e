//! `webtune bench`: time LoRA training steps (r 8 on q/k/v/o, batch 4 × 128 by default) on a
//! model with random weights and a suggested model's real shape (`--shape`, the presets of
//! `session::presets`), print the peak GPU memory beside the core's estimate for the same run, and
//! time a large f32 matmul on the same device, so model-FLOPs utilisation can be read off one line
//! of JSON. Figures only; nothing asserts speed or memory.

use std::time::Instant;

use burn::tensor::{Distribution, Tensor};
use serde_json::json;
use webtune::data::Batch;
use webtune::model::{CausalLm, LoadOptions, WeightsDtype};
use webtune::options::Recompute;
use webtune::profile::LoraBench;
use webtune::session::presets::Preset;
use webtune::train::{Supervised, Trainer, layer_inputs, loss_sum};
use webtune::{Result, device};

use crate::block;

#[derive(clap::Args)]
pub struct Args {
    /// The model shape: smollm2-135m, smollm2-360m, gemma3-270m, qwen2.5-0.5b, qwen3-0.6b or
    /// llama3.2-1b (config.json of the hub model; random weights).
    #[arg(long, default_value = "smollm2-135m")]
    shape: String,
    /// Decoder layers, fewer than the shape's for a quick smoke run.
    #[arg(long)]
    layers: Option<usize>,
    #[arg(long, default_value_t = 4)]
    batch_size: usize,
    #[arg(long, default_value_t = 128)]
    seq_len: usize,
    /// Untimed steps first (shader compilation). With 0 the timed steps include it.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    #[arg(long, default_value_t = 3)]
    steps: usize,
    /// Side of the square f32 matmul used for the device's peak GFLOP/s (0: none).
    #[arg(long, default_value_t = 2048)]
    matmul_size: usize,
    /// Storage width of the frozen weights: auto (f16 where the device computes in f16, as for a
    /// BF16 checkpoint), f16 or f32.
    #[arg(long, default_value = "auto", value_parser = WeightsDtype::parse)]
    weights_dtype: WeightsDtype,
    /// Recompute each decoder layer in the backward pass: auto (when the activations would exceed
    /// 512 MiB) | on | off.
    #[arg(long, value_enum, default_value_t = Recompute::Auto)]
    recompute: Recompute,
    /// Also count the kernel dispatches of one more step (and of 1- and 2-layer copies).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    count_dispatches: bool,
    /// Replay each batch shape's forward and backward passes recorded once (as training does), or
    /// issue them kernel by kernel (false).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    replay: bool,
}

pub fn run(args: Args) -> Result<()> {
    let (device, gpu) = device::gpu()?;
    let preset = Preset::find(&args.shape)?;
    let config = preset.config_with_layers(args.layers);
    let vocab = config.vocab_size;
    let load = LoadOptions { weights_dtype: args.weights_dtype, ..LoadOptions::default() };
    let lm = std::sync::Arc::new(CausalLm::random(config, &device, &load)?);
    let steps = args.warmup + args.steps + 2;
    let bench = block(LoraBench::new(lm.clone(), args.batch_size, args.seq_len, steps, args.recompute))?;
    let LoraBench { mut trainer, estimate, first_batch } = bench;
    trainer.set_recording(args.replay);
    // Pages that only held random weights before their cast are let go. What the pool reserves
    // after a step is its pages, not the step's peak: it may release pages within a step (Qwen3's
    // shape: 2.2 GiB reserved after a step that used 6 GiB), so the peak is measured in use.
    device.sync().map_err(|e| webtune::err!(Gpu, "GPU sync failed: {e:?}"))?;
    device.memory_cleanup();
    let (mut peak_reserved, mut in_use) = (0u64, 0u64);
    let mut sample_peak = || {
        if let Some(usage) = device.memory_pool_usage() {
            peak_reserved = peak_reserved.max(usage.bytes_reserved);
            in_use = usage.bytes_in_use;
        }
    };
    for _ in 0..args.warmup {
        block(trainer.step())?;
        sample_peak();
    }
    // Every timed step then starts from gradients issued by the one before, as in a run.
    trainer.prefetch();
    let start = Instant::now();
    let peak_in_use = sampled_peak(&device, || -> Result<()> {
        for _ in 0..args.steps {
            block(trainer.step())?;
        }
        Ok(())
    })?;
    sample_peak();
    let step_s = start.elapsed().as_secs_f64() / args.steps.max(1) as f64;
    let kept = match (args.steps > 0, estimate.recompute_layers) {
        (false, _) => None,
        (true, false) => kept_for_backward(&trainer, &first_batch)?,
        (true, true) => kept_when_recomputing(&trainer, &first_batch)?,
    };
    // The sampler sees the pool only between kernels and may miss the top, which is where the
    // forward pass ends: in use between steps plus what that pass keeps.
    let peak_in_use = match (peak_in_use, kept) {
        (Some(sampled), Some(kept)) => Some(sampled.max(in_use + kept)),
        (sampled, _) => sampled,
    };
    let tokens = (args.batch_size * args.seq_len) as f64;

    // Frozen base: forward (2·N·T) plus input gradients (2·N·T) over the linear layers and head.
    let weights: usize =
        lm.linears().iter().map(|l| l.in_features * l.out_features).sum::<usize>() + vocab * lm.config.hidden_size;
    let model_gflop = 4.0 * weights as f64 * tokens / 1e9;
    let achieved = model_gflop / step_s;
    let gflops = if args.matmul_size > 0 { Some(matmul_gflops(&device, args.matmul_size)?) } else { None };
    let counted =
        if args.count_dispatches { Some(webtune::profile::lora_step(&mut trainer, args.seq_len)?) } else { None };
    let mb = |bytes: u64| round(bytes as f64 / 1_048_576.0);
    println!(
        "{}",
        json!({
            "bench": "lora_step",
            "device": gpu.name,
            "backend": gpu.backend,
            "shape": preset.name,
            "model": format!("{}-shaped, random weights", preset.hub_id),
            "layers": lm.config.num_layers,
            "batch": args.batch_size,
            "seq_len": args.seq_len,
            "lora": "r=8 q,k,v,o",
            "recompute_layers": estimate.recompute_layers,
            "weights_dtype": lm.report.weights_dtype,
            "warmup_steps": args.warmup,
            "ms_per_step": round(step_s * 1e3),
            "tokens_per_s": round(tokens / step_s),
            "peak_gpu_in_use_mb": peak_in_use.map(mb),
            "peak_gpu_reserved_mb": mb(peak_reserved),
            "gpu_in_use_between_steps_mb": mb(in_use),
            "kept_for_backward_mb": kept.map(mb),
            "estimate_mb": mb(estimate.total),
            "estimate": estimate,
            "model_gflop_per_step": round(model_gflop),
            "achieved_gflops": round(achieved),
            "matmul_size": args.matmul_size,
            "matmul_gflops": gflops.map(round),
            "mfu_vs_matmul": gflops.map(|g| (achieved / g * 1000.0).round() / 1000.0),
            "counted_step": counted,
        })
    );
    Ok(())
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The most bytes the device's pool held in use while `work` ran, sampled every 2 ms from
/// another thread (between kernels, so a lower bound; `None` where the backend does not report
/// its pool).
fn sampled_peak(device: &burn::tensor::Device, work: impl FnOnce() -> Result<()>) -> Result<Option<u64>> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut peak = None;
            while !done.load(Ordering::Relaxed) {
                if let Some(usage) = device.memory_pool_usage() {
                    peak = Some(usage.bytes_in_use.max(peak.unwrap_or(0)));
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            peak
        });
        let result = work();
        done.store(true, Ordering::Relaxed);
        let peak = sampler.join().expect("the sampler thread does not panic");
        result.map(|()| peak)
    })
}

/// Bytes a forward pass over `batch` leaves on the device while its autodiff graph is alive:
/// what the backward pass will read (activations and kept logits), measured as the pool's bytes in
/// use before and after (`None` where the backend does not report them).
fn kept_for_backward(trainer: &Trainer, batch: &Batch) -> Result<Option<u64>> {
    let device = trainer.model().device();
    let sync = || device.sync().map_err(|e| webtune::err!(Gpu, "GPU sync failed: {e:?}"));
    let mut adapter = trainer.adapter().tracked();
    adapter.set_training(Some(1));
    sync()?;
    let Some(before) = device.memory_pool_usage() else { return Ok(None) };
    let loss = loss_sum(trainer.model(), &adapter, batch)?;
    sync()?;
    let after = device.memory_pool_usage().map_or(0, |u| u.bytes_in_use);
    drop(loss);
    Ok(Some(after.saturating_sub(before.bytes_in_use)))
}

/// Bytes the backward pass holds at its top when it recomputes each layer (`train::recompute`):
/// every layer's input, kept by the graph-free forward pass, plus the larger of what the loss's
/// graph keeps (its logits) and what one recomputed layer's graph keeps, measured as
/// [`kept_for_backward`] measures (`None` where the backend does not report its pool).
fn kept_when_recomputing(trainer: &Trainer, batch: &Batch) -> Result<Option<u64>> {
    let lm = trainer.model();
    let device = lm.device();
    let sync = || device.sync().map_err(|e| webtune::err!(Gpu, "GPU sync failed: {e:?}"));
    let in_use = || device.memory_pool_usage().map_or(0, |u| u.bytes_in_use);
    let mut adapter = trainer.adapter().tracked();
    adapter.set_training(Some(1));
    let mut untracked = trainer.adapter().clone();
    untracked.set_training(Some(1));
    sync()?;
    let Some(start) = device.memory_pool_usage().map(|u| u.bytes_in_use) else { return Ok(None) };
    let (embeds, mut ctx) = adapter.inputs(lm, &batch.input_ids, batch.batch, Some(&batch.attention_mask), None)?;
    let (inputs, x) = layer_inputs(lm, &untracked, lm.stream(embeds, &ctx), &mut ctx);
    sync()?;
    let saved = in_use().saturating_sub(start);
    let supervised = Supervised::of(lm, &adapter, batch)?.expect("every bench position is supervised");
    let kept_by = |graph: Tensor<1>, before: u64| -> Result<u64> {
        sync()?;
        let after = in_use();
        drop(graph);
        Ok(after.saturating_sub(before))
    };
    sync()?;
    let before = in_use();
    let head = kept_by(supervised.loss_sum(lm, lm.final_norm(x.autodiff().require_grad())), before)?;
    let last = lm.config.num_layers - 1;
    sync()?;
    let before = in_use();
    let input = inputs[last].clone().autodiff().require_grad();
    let layer = kept_by(lm.layer(last, input, &mut ctx, adapter.hooks()).sum(), before)?;
    Ok(Some(saved + head.max(layer)))
}

/// Sustained GFLOP/s of an `n × n` f32 matmul (after a warm-up run).
fn matmul_gflops(device: &burn::tensor::Device, n: usize) -> Result<f64> {
    let a = Tensor::<2>::random([n, n], Distribution::Normal(0.0, 1.0), device);
    let b = Tensor::<2>::random([n, n], Distribution::Normal(0.0, 1.0), device);
    let sync = || device.sync().map_err(|e| webtune::err!(Gpu, "GPU sync failed: {e:?}"));
    drop(a.clone().matmul(b.clone()));
    sync()?;
    let runs = 3;
    let start = Instant::now();
    for _ in 0..runs {
        drop(a.clone().matmul(b.clone()));
    }
    sync()?;
    Ok(2.0 * (n as f64).powi(3) * runs as f64 / start.elapsed().as_secs_f64() / 1e9)
}
