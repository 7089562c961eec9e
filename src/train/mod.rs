//! The training loop: batches in a seeded (or file) order, gradient accumulation, grad-norm
//! clipping, AdamW, LR schedules, periodic evaluation and early stopping, checkpoints. Every
//! convention follows transformers' `Trainer` so that results match PEFT runs.

mod batches;
pub mod checkpoint;
mod graph;
mod loss;
pub mod optim;
mod recompute;
pub mod schedule;

use std::collections::HashMap;
use std::sync::Arc;

use burn::tensor::Tensor;

use crate::data::{Batch, Example};
use crate::err;
use crate::error::Result;
use crate::kernels::AdamWStep;
use crate::model::CausalLm;
use crate::model::weights::HostTensor;
use crate::peft::Adapter;
use crate::readback;
use crate::rng::{Rng, Stream};
use batches::{BatchShape, Plan};
use graph::StepGraph;
use loss::supervised_predictions;
pub use loss::{Supervised, evaluate, loss_sum};
pub use optim::{AdamW, AdamWConfig};
pub use recompute::layer_inputs;
pub use schedule::Schedule;

/// Stop when the eval loss has not improved by more than `threshold` for `patience` evaluations
/// (transformers' `EarlyStoppingCallback`); the best adapter is restored at the end.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EarlyStopping {
    pub patience: usize,
    pub threshold: f64,
}

/// How the loop trains. Built from the user's options by `TrainingOptions::train_config`, which
/// holds the defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    pub lr: f64,
    pub optimizer: AdamWConfig,
    pub schedule: Schedule,
    pub warmup_steps: usize,
    pub batch_size: usize,
    pub grad_accum: usize,
    /// Clip the global gradient norm to this value.
    pub clip: Option<f64>,
    /// Optimizer steps to run; overrides `epochs` when set (as `max_steps` does in transformers).
    pub max_steps: Option<usize>,
    pub epochs: usize,
    /// Evaluate every this many optimizer steps (and after the last).
    pub eval_every: Option<usize>,
    pub early_stopping: Option<EarlyStopping>,
    /// Shuffle each epoch (seeded); otherwise file order.
    pub shuffle: bool,
    pub seed: u64,
    /// Keep only each decoder layer's input from the forward pass and recompute the layer in the
    /// backward pass (`train::recompute`): activation memory of one layer instead of all.
    pub recompute_layers: bool,
}

/// What one optimizer step did. `step` counts completed steps (1 after the first). Serialised
/// with camelCase names: `WebTrainer.step()`'s result and each line of the CLI's `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepMetrics {
    pub step: usize,
    /// The steps the run will take (fewer if early stopping ends it).
    pub total_steps: usize,
    pub epoch: f64,
    /// Mean cross-entropy per supervised token over the step's (accumulated) batches.
    pub loss: f64,
    /// The learning rate this step used.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Non-padding tokens processed.
    pub tokens: usize,
    pub supervised_tokens: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_loss: Option<f64>,
    /// Set on the step after which early stopping ended training.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub early_stopped: bool,
}

/// Passes per shape in [`Trainer::warm_up`].
const WARM_PASSES: usize = 3;

/// A step's gradients, in [`Adapter::params`] order.
#[derive(Clone)]
pub enum Grads {
    /// One tensor per trainable tensor.
    PerTensor(Vec<Tensor<2>>),
    /// All of them end to end, as the LoRA layers added them to a [`crate::kernels::GradientSink`].
    Flat(Box<Tensor<1>>),
}

impl Grads {
    /// One tensor per trainable tensor of `adapter` (views of a flat buffer).
    pub fn per_tensor(self, adapter: &Adapter) -> Vec<Tensor<2>> {
        match self {
            Grads::PerTensor(grads) => grads,
            Grads::Flat(flat) => optim::split(*flat, adapter.params().into_iter().map(|(_, t)| t.dims())),
        }
    }

    /// What [`AdamW::step`] gathers: the tensors, or the flat buffer as one.
    fn for_optimizer(self) -> Vec<Tensor<2>> {
        match self {
            Grads::PerTensor(grads) => grads,
            Grads::Flat(flat) => {
                let flat = *flat;
                let n = flat.dims()[0];
                vec![flat.reshape([1, n])]
            }
        }
    }
}

/// What the backward passes of one optimizer step produce.
pub struct StepGradients {
    /// In [`Adapter::params`] order.
    pub grads: Grads,
    /// Summed token cross-entropy of the step's batches.
    pub loss_sum: Tensor<1>,
    /// Supervised tokens the loss is averaged over.
    pub supervised: usize,
    /// Non-padding tokens processed.
    pub tokens: usize,
}

/// Best eval loss so far and the adapter values that reached it, copied to the host: on the GPU
/// the optimizer updates the parameters in place.
#[derive(Clone)]
struct Best {
    loss: f64,
    params: Vec<HostTensor>,
}

/// A training run. Drive it with [`Trainer::step`] until [`Trainer::is_done`].
pub struct Trainer {
    lm: Arc<CausalLm>,
    adapter: Adapter,
    optimizer: AdamW,
    config: TrainConfig,
    train: Vec<Example>,
    eval: Vec<Example>,
    pad_id: u32,
    plan: Plan,
    shape: BatchShape,
    total_steps: usize,
    /// Completed optimizer steps.
    step: usize,
    best: Option<Best>,
    evals_without_improvement: usize,
    stopped_early: bool,
    /// The next step's gradients, issued by [`Trainer::prefetch`] after the last update.
    prefetched: Option<Result<StepGradients>>,
    /// Whether [`Trainer::step`] issues the next step's passes while the GPU finishes its own.
    overlap: bool,
    /// Whether steps replay their passes recorded per batch shape ([`graph`]), where the run
    /// allows: when all its batches have one shape. A recording keeps every buffer its passes
    /// write (CubeCL's graph holds them), so each shape recorded would add a step's working
    /// memory; a run of one shape keeps about what its steps reserve anyway (SmolLM2-135M's
    /// shape, 30 layers, 1 × 16 tokens, lavapipe: 303.4 MiB in use at the peak, 367.7 reserved,
    /// against 285.3 and 358.1 kernel by kernel).
    recording: bool,
    /// The recorded passes by batch shape (rows, length); `None` for a shape that cannot be.
    graphs: HashMap<(usize, usize), Option<StepGraph>>,
    /// What a checkpoint of this run must match to resume it.
    identity: checkpoint::RunIdentity,
}

impl Trainer {
    pub fn new(
        lm: Arc<CausalLm>,
        adapter: Adapter,
        train: Vec<Example>,
        eval: Vec<Example>,
        config: TrainConfig,
        pad_id: u32,
    ) -> Result<Self> {
        if train.is_empty() {
            return Err(err!(InvalidDataset, "the training set is empty"));
        }
        if config.batch_size == 0 || config.grad_accum == 0 {
            return Err(err!(InvalidOptions, "batch size and gradient accumulation must be at least 1"));
        }
        if !(config.lr > 0.0 && config.lr.is_finite()) {
            return Err(err!(InvalidOptions, "the learning rate must be a positive number, got {}", config.lr));
        }
        if config.early_stopping.is_some() && (eval.is_empty() || config.eval_every.is_none()) {
            return Err(err!(InvalidOptions, "early stopping needs an eval set and an eval interval (--eval-every)"));
        }
        let plan = Plan {
            examples: train.len(),
            batch_size: config.batch_size,
            grad_accum: config.grad_accum,
            shuffle: config.shuffle,
            seed: config.seed,
        };
        let total_steps = config.max_steps.unwrap_or(plan.steps_per_epoch() * config.epochs.max(1));
        let shape = BatchShape::of(&train, config.batch_size);
        let lengths: std::collections::BTreeSet<usize> = train.iter().map(|e| shape.len_of(&[e])).collect();
        let params: Vec<Tensor<2>> = adapter.params().into_iter().map(|(_, t)| t).collect();
        let (optimizer, params) = AdamW::new(config.optimizer, params);
        let adapter = adapter.with_params(params);
        let identity = checkpoint::RunIdentity::of(&lm, &adapter, &train, &eval, &config);
        Ok(Trainer {
            lm,
            adapter,
            optimizer,
            config,
            train,
            eval,
            pad_id,
            plan,
            shape,
            total_steps,
            step: 0,
            best: None,
            evals_without_improvement: 0,
            stopped_early: false,
            prefetched: None,
            overlap: true,
            recording: lengths.len() == 1,
            graphs: HashMap::new(),
            identity,
        })
    }

    pub fn adapter(&self) -> &Adapter {
        &self.adapter
    }

    pub fn model(&self) -> &Arc<CausalLm> {
        &self.lm
    }

    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    pub fn steps_done(&self) -> usize {
        self.step
    }

    pub fn total_steps(&self) -> usize {
        self.total_steps
    }

    pub fn is_done(&self) -> bool {
        self.step >= self.total_steps || self.stopped_early
    }

    /// Runs one optimizer step (with its accumulated micro-batches), then evaluates if due. The
    /// step's loss and gradient norm are read back without stalling the GPU: the read is queued
    /// behind the update, then the next step's forward and backward passes are issued
    /// ([`Trainer::prefetch`]) while it completes, so the GPU has work while the host waits for
    /// the values, and the next call starts with its gradients on the way.
    pub async fn step(&mut self) -> Result<StepMetrics> {
        if self.is_done() {
            return Err(err!(InvalidOptions, "training is already finished"));
        }
        let gradients = match self.prefetched.take() {
            Some(gradients) => gradients,
            None => self.issue_gradients(),
        };
        let StepGradients { grads, loss_sum, supervised, tokens } = gradients?;
        let lr = self.config.lr * self.config.schedule.factor(self.step, self.config.warmup_steps, self.total_steps);
        let (updated, norm) = self.optimizer.step(grads.for_optimizer(), lr, self.config.clip);
        self.adapter = self.adapter.with_params(updated);
        self.step += 1;

        // Two reads rather than one of both values end to end: joining them would be a kernel.
        let (loss_sum, norm) = (readback::Started::new(loss_sum), readback::Started::new(norm));
        if self.overlap {
            self.prefetch();
        }
        let values = [loss_sum.finish().await?[0], norm.finish().await?[0]];
        let mut metrics = StepMetrics {
            step: self.step,
            total_steps: self.total_steps,
            epoch: self.step as f64 / self.plan.steps_per_epoch() as f64,
            loss: values[0] as f64 / supervised as f64,
            lr,
            grad_norm: values[1] as f64,
            tokens,
            supervised_tokens: supervised,
            eval_loss: None,
            early_stopped: false,
        };
        if !metrics.loss.is_finite() {
            return Err(err!(
                InvalidOptions,
                "the loss became {} at step {}: lower the learning rate",
                metrics.loss,
                self.step
            ));
        }
        let eval_due =
            self.config.eval_every.is_some_and(|n| self.step.is_multiple_of(n)) || self.step == self.total_steps;
        if !self.eval.is_empty() && self.config.eval_every.is_some() && eval_due {
            let eval_loss = self.evaluate().await?;
            metrics.eval_loss = Some(eval_loss);
            self.record_eval(eval_loss).await?;
            metrics.early_stopped = self.stopped_early;
        }
        if self.is_done() {
            self.prefetched = None;
            self.restore_best();
        }
        Ok(metrics)
    }

    /// Turns off (or back on) issuing the next step's passes inside [`Trainer::step`], for
    /// benchmarks that time the host's issuing alone: with a software GPU (SwiftShader, lavapipe)
    /// the GPU's work runs on the same CPU cores as the host while the passes are issued.
    pub fn set_overlap(&mut self, overlap: bool) {
        self.overlap = overlap;
    }

    /// Issues the next step's forward and backward passes now, if the run has a next step and
    /// they are not issued yet; [`Trainer::step`] then starts from their gradients. `step` does
    /// it after each update; benchmarks call it first, so that every step they time is alike.
    pub fn prefetch(&mut self) {
        if self.prefetched.is_none() && !self.is_done() {
            self.prefetched = Some(self.issue_gradients());
        }
    }

    /// The optimizer's kernels on `grads` with an update that changes nothing
    /// ([`AdamWStep::unchanged`]): the warm-up's, and what benchmarks count. Returns the norm.
    pub fn unchanging_update(&self, grads: Grads) -> Tensor<1> {
        let unchanged = AdamWStep::unchanged(self.config.clip.map_or(0.0, |c| c as f32));
        let scalars = optim::upload(&unchanged, self.lm.device());
        self.optimizer.clone().update(grads.for_optimizer(), scalars).1
    }

    /// Gradients of the mean token loss of the next step's (accumulated) batches with respect to
    /// each trainable tensor, in [`Adapter::params`] order, before clipping.
    pub fn next_gradients(&self) -> Result<StepGradients> {
        let (micro_batches, supervised, tokens) = self.next_batches()?;
        self.gradients(&micro_batches, supervised, tokens)
    }

    /// The next step's micro-batches, their supervised predictions and non-padding tokens.
    fn next_batches(&self) -> Result<(Vec<Batch>, usize, usize)> {
        let micro_batches: Vec<Batch> = self.plan.step(self.step).iter().map(|idx| self.collate(idx)).collect();
        let prefix = self.adapter.prefix_len();
        let supervised: usize = micro_batches.iter().map(|b| supervised_predictions(b, prefix)).sum();
        let tokens: usize = micro_batches.iter().map(|b| b.attention_mask.iter().filter(|&&m| m != 0).count()).sum();
        if supervised == 0 {
            return Err(err!(InvalidDataset, "step {} has no supervised tokens", self.step + 1));
        }
        Ok((micro_batches, supervised, tokens))
    }

    fn collate(&self, indices: &[usize]) -> Batch {
        self.shape.collate(&indices.iter().map(|&i| &self.train[i]).collect::<Vec<_>>(), self.pad_id)
    }

    /// Forward and backward passes over `micro_batches`, the loss divided by `supervised`.
    fn gradients(&self, micro_batches: &[Batch], supervised: usize, tokens: usize) -> Result<StepGradients> {
        let lm = self.lm.clone();
        let mut tracked = self.adapter.tracked();
        let rows = micro_batches.iter().map(|b| b.input_ids.len()).max().unwrap_or(0);
        let sink = match &mut tracked {
            Adapter::Lora(lora) => lora.send_gradients_to_sink(rows),
            _ => None,
        };
        // With a sink the LoRA layers add their gradients to it; autodiff gives the leaves none.
        let leaves: Vec<Tensor<2>> = match sink {
            Some(_) => Vec::new(),
            None => tracked.params().into_iter().map(|(_, t)| t).collect(),
        };
        let mut grads = recompute::Accumulated::new(leaves);
        let mut loss_total: Option<Tensor<1>> = None;
        for (micro, batch) in micro_batches.iter().enumerate() {
            // Dropout masks depend only on (seed, step, micro-batch), so resumed runs match.
            let stream = Stream::StepDropout { step: self.step, micro_batch: micro };
            let dropout_seed = Some(Rng::stream(self.config.seed, stream).next_u64());
            tracked.set_training(dropout_seed);
            let Some(supervised_rows) = Supervised::of(&lm, &tracked, batch)? else { continue };
            // transformers divides by the supervised tokens of the whole accumulated step.
            let sum = if self.config.recompute_layers {
                let mut untracked = self.adapter.clone();
                untracked.set_training(dropout_seed);
                recompute::loss_and_gradients(
                    &lm,
                    &untracked,
                    &tracked,
                    batch,
                    &supervised_rows,
                    supervised,
                    &mut grads,
                )?
            } else {
                let hidden = tracked.hidden(&lm, &batch.input_ids, batch.batch, Some(&batch.attention_mask), None)?;
                let sum = supervised_rows.loss_sum(&lm, hidden);
                grads.add((sum.clone() / supervised as f64).backward());
                sum
            };
            let sum = sum.detach().inner();
            loss_total = Some(loss_total.map_or(sum.clone(), |t| t + sum));
        }
        let loss_sum = loss_total.expect("a step with supervised tokens has a loss");
        let grads = match sink {
            Some(sink) => Grads::Flat(Box::new(sink.values())),
            None => Grads::PerTensor(grads.finish()),
        };
        Ok(StepGradients { grads, loss_sum, supervised, tokens })
    }

    /// Compiles the GPU pipelines of every batch shape the run can meet, so that no training step
    /// waits for compilation (seconds per shape in a browser): one forward and backward pass per
    /// padded length a training batch can have (a batch is padded to the bucket of its longest
    /// example, so these are the buckets of the examples), each with an optimizer update that
    /// changes nothing ([`AdamWStep::unchanged`]), [`WARM_PASSES`] times, and one evaluation pass
    /// per eval length. Changes nothing in the run. Returns the shapes warmed.
    pub async fn warm_up(&mut self) -> Result<usize> {
        let mut by_len: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
        for (i, example) in self.train.iter().enumerate() {
            let rows = by_len.entry(self.shape.len_of(&[example])).or_default();
            if rows.len() < self.shape.rows {
                rows.push(i);
            }
        }
        let firsts = by_len;
        let mut warmed = 0;
        for indices in firsts.values() {
            let batch = self.collate(indices);
            let supervised = supervised_predictions(&batch, self.adapter.prefix_len());
            if supervised == 0 {
                continue;
            }
            // burn's fusion settles on its fused kernels after seeing a graph a few times; a shape
            // recorded has settled (`StepGraph::record`), and one replay compiles the rest.
            let recorded = self.record(&batch, supervised)?;
            for _ in 0..if recorded { 1 } else { WARM_PASSES } {
                let StepGradients { grads, loss_sum, .. } = self.batch_gradients(vec![batch.clone()], supervised, 0)?;
                let norm = self.unchanging_update(grads);
                readback::scalar(loss_sum).await?;
                readback::scalar(norm).await?;
            }
            warmed += 1;
        }
        if !self.eval.is_empty() {
            let shape = BatchShape::of(&self.eval, self.config.batch_size);
            let mut lengths = std::collections::BTreeSet::new();
            for chunk in self.eval.chunks(self.config.batch_size.max(1)) {
                let refs: Vec<&Example> = chunk.iter().collect();
                if lengths.insert(shape.len_of(&refs)) {
                    let mut adapter = self.adapter.clone();
                    adapter.set_training(None);
                    if let Some((sum, _)) = loss_sum(&self.lm, &adapter, &shape.collate(&refs, self.pad_id))? {
                        readback::scalar(sum).await?;
                        warmed += 1;
                    }
                }
            }
        }
        Ok(warmed)
    }

    /// Mean token loss of the current adapter on the eval set.
    pub async fn evaluate(&self) -> Result<f64> {
        evaluate(&self.lm, &self.adapter, &self.eval, self.config.batch_size, self.pad_id).await
    }

    async fn record_eval(&mut self, loss: f64) -> Result<()> {
        let Some(es) = self.config.early_stopping else { return Ok(()) };
        // transformers resets patience only for an improvement larger than the threshold, but
        // keeps any strictly better adapter as the best one.
        let improved_enough = self.best.as_ref().is_none_or(|b| loss < b.loss && b.loss - loss > es.threshold);
        if self.best.as_ref().is_none_or(|b| loss < b.loss) {
            self.best = Some(Best { loss, params: self.optimizer.host_params().await? });
        }
        if improved_enough {
            self.evals_without_improvement = 0;
        } else {
            self.evals_without_improvement += 1;
            if self.evals_without_improvement >= es.patience {
                self.stopped_early = true;
            }
        }
        Ok(())
    }

    /// With early stopping, training ends on the best adapter seen.
    fn restore_best(&mut self) {
        if let Some(best) = &self.best {
            let params = checkpoint::to_device(best.params.clone(), self.lm.device());
            self.adapter = self.adapter.with_params(self.optimizer.set_params(params));
            // The recordings read the parameters where they were.
            self.graphs.clear();
        }
    }

    /// The eval loss of the best adapter so far (with early stopping).
    pub fn best_eval_loss(&self) -> Option<f64> {
        self.best.as_ref().map(|b| b.loss)
    }
}
