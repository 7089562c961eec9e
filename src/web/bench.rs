//! `WebBench`: the training benchmark of `engine.bench()` (`crate::profile`). The npm engine
//! drives it step by step and adds what it counts at the WebGPU API around each step.

use std::sync::Arc;

use serde::Serialize;
use wasm_bindgen::prelude::*;

use super::{WebModel, from_js, gpu, js_error, to_js};
use crate::model::{CausalLm, LoadOptions};
use crate::profile::{BenchOptions, Counting, LoraBench, step_shares};
use crate::session::memory::MemoryEstimate;
use crate::session::presets::Preset;

#[wasm_bindgen]
pub struct WebBench {
    bench: LoraBench,
    info: BenchInfo,
}

/// What a benchmark trains (index.d.ts `BenchResult`'s first fields).
#[derive(Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct BenchInfo {
    /// The loaded model's architecture, or the preset's hub id with "random weights".
    model: String,
    layers: usize,
    batch_size: usize,
    seq_len: usize,
    lora: &'static str,
    weights_dtype: &'static str,
    estimate: MemoryEstimate,
}

/// One timed step: its loss, the kernels the core launched for it, and whether it replayed its
/// recorded passes.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CountedStep {
    loss: f64,
    dispatches: u64,
    replayed: bool,
}

#[wasm_bindgen]
impl WebBench {
    /// A benchmark run on the loaded `model`.
    #[wasm_bindgen(js_name = ofModel)]
    pub async fn of_model(model: &WebModel, options: JsValue) -> Result<WebBench, JsValue> {
        let options: BenchOptions = from_js(options, "bench options")?;
        let lm = model.model.lm.clone();
        let name = lm.config.architecture.name().to_owned();
        Self::new(lm, name, &options).await
    }

    /// A benchmark run on the shape of preset `options.shape` (`options.layers` of its layers),
    /// with random weights stored as a BF16 checkpoint would be on this device.
    #[wasm_bindgen(js_name = ofShape)]
    pub async fn of_shape(options: JsValue) -> Result<WebBench, JsValue> {
        let options: BenchOptions = from_js(options, "bench options")?;
        let shape = options.shape.as_deref().unwrap_or_default();
        let preset = Preset::find(shape).map_err(js_error)?;
        let config = preset.config_with_layers(options.layers);
        let lm = CausalLm::random(config, &gpu()?, &LoadOptions::default()).map_err(js_error)?;
        Self::new(Arc::new(lm), format!("{}-shaped, random weights", preset.hub_id), &options).await
    }

    async fn new(lm: Arc<CausalLm>, model: String, options: &BenchOptions) -> Result<WebBench, JsValue> {
        let (batch_size, seq_len) = (options.batch_size.max(1), options.seq_len.max(2));
        let mut bench = LoraBench::new(lm.clone(), batch_size, seq_len, options.steps.max(1) + 1, options.recompute)
            .await
            .map_err(js_error)?;
        // Every counted step then starts from gradients issued before it, as a run's steps after
        // the first do (`Trainer::step`); without overlap, each issues its own.
        bench.trainer.set_overlap(options.overlap);
        bench.trainer.set_recording(options.replay);
        if options.overlap {
            bench.trainer.prefetch();
        }
        let info = BenchInfo {
            model,
            layers: lm.config.num_layers,
            batch_size,
            seq_len,
            lora: "r=8 q,k,v,o",
            weights_dtype: lm.report.weights_dtype,
            estimate: bench.estimate.clone(),
        };
        Ok(WebBench { bench, info })
    }

    /// What the benchmark trains (`{model, layers, batchSize, seqLen, lora, weightsDtype, estimate}`).
    pub fn info(&self) -> Result<JsValue, JsValue> {
        to_js(&self.info)
    }

    /// Compiles the run's pipelines (`Trainer::warm_up`); resolves to the shapes warmed.
    #[wasm_bindgen(js_name = warmUp)]
    pub async fn warm_up(&mut self) -> Result<usize, JsValue> {
        self.bench.trainer.warm_up().await.map_err(js_error)
    }

    /// One training step, done (its loss read back): `{loss, dispatches, replayed}`.
    pub async fn step(&mut self) -> Result<JsValue, JsValue> {
        let device = self.bench.trainer.model().device().clone();
        let counting = Counting::start();
        let metrics = self.bench.trainer.step().await.map_err(js_error)?;
        let dispatches = counting.finish(&device).map_err(js_error)?;
        to_js(&CountedStep { loss: metrics.loss, dispatches, replayed: self.bench.trainer.recorded_shapes() > 0 })
    }

    /// Where a step's kernels go (`StepShares`: `{gradientDispatches, dispatchesPerLayer,
    /// dispatchesOutsideLayers}`), measured on the next step's passes and on 1- and 2-layer copies.
    pub async fn shares(&self) -> Result<JsValue, JsValue> {
        to_js(&step_shares(&self.bench.trainer, self.info.seq_len).await.map_err(js_error)?)
    }
}
