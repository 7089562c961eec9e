//! `webtune bench`: time LoRA training steps (r 8 on q/k/v/o, batch 4 × 128 by default) on a
//! randomly initialised SmolLM2-135M-shaped model, and a large f32 matmul on the same device, so
//! model-FLOPs utilisation can be read off one line of JSON. Figures only; nothing asserts speed.

use std::time::Instant;

use burn::tensor::{Distribution, Tensor};
use serde_json::json;
use webtune::data::Example;
use webtune::model::{CausalLm, LoadOptions, ModelConfig, WeightsDtype};
use webtune::options::DEFAULTS;
use webtune::peft::{Adapter, LoraAdapter, LoraConfig};
use webtune::rng::Rng;
use webtune::train::{Schedule, TrainConfig, Trainer};
use webtune::{Result, device};

use crate::block;

#[derive(clap::Args)]
pub struct Args {
    /// Decoder layers (SmolLM2-135M has 30; fewer for a quick smoke run).
    #[arg(long, default_value_t = 30)]
    layers: usize,
    #[arg(long, default_value_t = 4)]
    batch_size: usize,
    #[arg(long, default_value_t = 128)]
    seq_len: usize,
    /// Timed steps, after one untimed warm-up step (shader compilation).
    #[arg(long, default_value_t = 3)]
    steps: usize,
    /// Side of the square f32 matmul used for the device's peak GFLOP/s.
    #[arg(long, default_value_t = 2048)]
    matmul_size: usize,
    /// Storage width of the frozen weights: auto (f16 where the device computes in f16, as for a
    /// BF16 checkpoint), f16 or f32.
    #[arg(long, default_value = "auto", value_parser = WeightsDtype::parse)]
    weights_dtype: WeightsDtype,
}

pub fn run(args: Args) -> Result<()> {
    let (device, gpu) = device::gpu()?;
    let config = ModelConfig::from_json(&format!(
        r#"{{"model_type":"llama","vocab_size":49152,"hidden_size":576,"intermediate_size":1536,
            "num_hidden_layers":{},"num_attention_heads":9,"num_key_value_heads":3,"rms_norm_eps":1e-5,
            "rope_theta":100000.0,"tie_word_embeddings":true,"max_position_embeddings":8192}}"#,
        args.layers
    ))?;
    let vocab = config.vocab_size;
    let options = LoadOptions { weights_dtype: args.weights_dtype, ..LoadOptions::default() };
    let lm = std::sync::Arc::new(CausalLm::random(config, &device, &options)?);
    let lora = LoraConfig {
        target_modules: ["q_proj", "k_proj", "v_proj", "o_proj"].map(String::from).to_vec(),
        ..LoraConfig::default()
    };
    let adapter = Adapter::Lora(block(LoraAdapter::init(&lm, lora, 0))?);

    let mut rng = Rng::new(0);
    let examples: Vec<Example> = (0..args.batch_size * (args.steps + 1))
        .map(|_| {
            let ids: Vec<u32> = (0..args.seq_len).map(|_| rng.below(vocab) as u32).collect();
            Example { labels: ids.iter().map(|&i| i as i64).collect(), input_ids: ids, line: 0 }
        })
        .collect();
    let config = TrainConfig {
        lr: 1e-4,
        schedule: Schedule::Constant,
        batch_size: args.batch_size,
        max_steps: Some(args.steps + 2),
        shuffle: false,
        ..DEFAULTS.train_config()?
    };
    let mut trainer = Trainer::new(lm.clone(), adapter, examples, Vec::new(), config, 0)?;
    block(trainer.step())?;
    let mut peak_reserved = 0u64;
    let start = Instant::now();
    for _ in 0..args.steps {
        block(trainer.step())?;
        if let Some(usage) = device.memory_pool_usage() {
            peak_reserved = peak_reserved.max(usage.bytes_reserved);
        }
    }
    let step_s = start.elapsed().as_secs_f64() / args.steps as f64;
    let tokens = (args.batch_size * args.seq_len) as f64;

    // Frozen base: forward (2·N·T) plus input gradients (2·N·T) over the linear layers and head.
    let weights: usize =
        lm.linears().iter().map(|l| l.in_features * l.out_features).sum::<usize>() + vocab * lm.config.hidden_size;
    let model_gflop = 4.0 * weights as f64 * tokens / 1e9;
    let gflops = matmul_gflops(&device, args.matmul_size)?;
    let achieved = model_gflop / step_s;
    println!(
        "{}",
        json!({
            "bench": "lora_step",
            "device": gpu.name,
            "backend": gpu.backend,
            "model": "SmolLM2-135M-shaped, random weights",
            "layers": args.layers,
            "batch": args.batch_size,
            "seq_len": args.seq_len,
            "lora": "r=8 q,k,v,o",
            "weights_dtype": lm.report.weights_dtype,
            "ms_per_step": round(step_s * 1e3),
            "tokens_per_s": round(tokens / step_s),
            "peak_gpu_reserved_mb": round(peak_reserved as f64 / 1_048_576.0),
            "model_gflop_per_step": round(model_gflop),
            "achieved_gflops": round(achieved),
            "matmul_size": args.matmul_size,
            "matmul_gflops": round(gflops),
            "mfu_vs_matmul": (achieved / gflops * 1000.0).round() / 1000.0,
            "counted_step": webtune::profile::lora_step(&mut trainer, args.seq_len)?,
        })
    );
    Ok(())
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
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
