//! A training step's forward and backward passes recorded once per batch shape as a GPU graph
//! and replayed (CubeCL's wgpu graph capture, through burn's `Backend::graph_start_capture` ..
//! `graph_replay`): a replay re-encodes the recorded dispatches with pipelines and bind groups
//! built once, instead of issuing each kernel through burn's autodiff, burn's fusion and CubeCL's
//! launch path (tens of microseconds of host time per dispatch in a browser, about 1,100
//! dispatches a step at SmolLM2-135M's shape). The optimizer's update (3 dispatches) runs as
//! before, after the replay.
//!
//! A recording reads and writes the buffers it was recorded with and holds kernel dispatches only,
//! so the passes take their host inputs from one device buffer written before each replay
//! ([`Layout`]): the token ids, each position's target (−1 where nothing is supervised) and
//! whether it counts, `1 / supervised tokens`, and the attention's key mask and RoPE tables. The
//! adapter's parameters are read where the optimizer updates them in place. The passes' own
//! tensors live in CubeCL's persistent pool (`Device::memory_persistent_allocations`), which
//! serves nothing allocated outside a recording: a replay overwrites them, so no tensor allocated
//! between replays may share their memory.
//!
//! Recorded: plain LoRA (its gradient sink: no dropout, no PiSSA or DoRA), one micro-batch per
//! step, layers recomputed or not, an unsplit embedding and LM head, on a GPU, in a run whose
//! batches have one shape (`Trainer`'s `recording`: a recording keeps its memory). A shape is
//! recorded only if a trial pass copied nothing from the host ([`crate::upload`]); anything else
//! runs the passes as before.

use burn::backend::{Backend, BackendGraph, Dispatch};
use burn::tensor::{Device, Tensor};

use super::recompute::{Accumulated, backward_by_layer};
use super::{AdamW, Grads, StepGradients, Trainer};
use crate::data::{Batch, IGNORE_INDEX};
use crate::err;
use crate::error::Result;
use crate::kernels::{self, AttentionInputs};
use crate::model::CausalLm;
use crate::model::attention::{AttentionContext, KernelInputsKey};
use crate::model::layers::Rope;
use crate::peft::Adapter;
use crate::upload;

/// Passes run before recording, once burn's fusion has settled on its kernels (it does from the
/// second pass on): they also leave in the persistent pool the memory the recording reuses (a
/// recording may not allocate new memory).
const SETTLING_PASSES: usize = 2;

/// Where each input sits in the step's input buffer. Each part starts at a multiple of
/// [`kernels::aligned`] values, so that it binds as a view of the buffer rather than a copy.
#[derive(Clone, Debug)]
struct Layout {
    batch: usize,
    len: usize,
    ids: usize,
    targets: usize,
    counted: usize,
    inverse_supervised: usize,
    /// The fused attention's inputs, one for each key the model asks for.
    attention: Vec<AttentionPart>,
    size: usize,
}

/// Where one of the fused attention's inputs (`[cos | sin | mask]`) sits, and its RoPE tables
/// (the same every step: computed once).
#[derive(Clone, Debug)]
struct AttentionPart {
    key: KernelInputsKey,
    at: usize,
    len: usize,
    tables: Option<(Vec<f32>, Vec<f32>)>,
}

impl Layout {
    fn new(batch: usize, len: usize, keys: Vec<KernelInputsKey>) -> Self {
        let tokens = batch * len;
        let mut size = 0;
        let mut part = |n: usize| {
            let at = size;
            size += kernels::aligned(n);
            at
        };
        let (ids, targets, counted, inverse_supervised) = (part(tokens), part(tokens), part(tokens), part(1));
        let attention = keys
            .into_iter()
            .map(|key| {
                let tables = key.as_ref().map(|(config, d)| Rope::tables(config, *d, 0, len));
                let n = tables.as_ref().map_or(0, |(cos, sin)| cos.len() + sin.len()) + tokens;
                AttentionPart { key, at: part(n), len: n, tables }
            })
            .collect();
        Layout { batch, len, ids, targets, counted, inverse_supervised, attention, size }
    }

    /// The buffer's values for `batch`, whose supervised predictions are `supervised`.
    fn values(&self, batch: &Batch, supervised: usize) -> Vec<f32> {
        let tokens = self.batch * self.len;
        let mut values = vec![0.0; self.size];
        for (i, &id) in batch.input_ids.iter().enumerate() {
            values[self.ids + i] = id as f32;
        }
        // Position p predicts the next label of its row (transformers' shifted labels).
        for i in 0..tokens {
            let next = (i % self.len + 1 < self.len).then(|| batch.labels[i + 1]).filter(|&l| l != IGNORE_INDEX);
            values[self.targets + i] = next.map_or(-1.0, |l| l as f32);
            values[self.counted + i] = if next.is_some() { 1.0 } else { 0.0 };
        }
        values[self.inverse_supervised] = 1.0 / supervised as f32;
        let mask = Some(batch.attention_mask.as_slice());
        for AttentionPart { at, len, tables, .. } in &self.attention {
            let tables = tables.as_ref().map(|(cos, sin)| (cos.as_slice(), sin.as_slice()));
            values[*at..*at + len].copy_from_slice(&AttentionInputs::values(self.batch, self.len, mask, tables));
        }
        values
    }
}

/// A batch shape's recorded passes: the graph, its input buffer, and the buffers it leaves the
/// summed loss and the gradients in.
pub(super) struct StepGraph {
    graph: BackendGraph<Dispatch>,
    layout: Layout,
    inputs: Tensor<1>,
    loss_sum: Tensor<1>,
    grads: Tensor<1>,
}

impl StepGraph {
    /// Whether a run with `adapter` may record its steps on `device`: see the module doc (the
    /// trial pass checks the rest).
    pub(super) fn may_record(adapter: &Adapter, grad_accum: usize, device: &Device) -> bool {
        let Adapter::Lora(lora) = adapter else { return false };
        grad_accum == 1 && lora.sends_gradients_to_sink(1) && !crate::device::info_of(device).is_cpu()
    }

    /// Records the passes of batches shaped like `batch` (with `supervised` supervised
    /// predictions), or `None` when a trial pass needed anything from the host. The passes run
    /// [`SETTLING_PASSES`] + 1 times (the first to find the attention inputs the model asks for);
    /// the recording itself runs nothing, so [`StepGraph::gradients`] follows.
    pub(super) fn record(
        lm: &CausalLm,
        adapter: &Adapter,
        optimizer: &AdamW,
        batch: &Batch,
        supervised: usize,
        recompute: bool,
    ) -> Result<Option<Self>> {
        let device = lm.device();
        let discovery = Layout::new(batch.batch, batch.len, Vec::new());
        let inputs = Self::buffer(&discovery, batch, supervised, device);
        let Some((_, _, keys)) = pass(lm, adapter, optimizer, &discovery, &inputs, batch, recompute)? else {
            return Ok(None);
        };
        let layout = Layout::new(batch.batch, batch.len, keys);
        let inputs = Self::buffer(&layout, batch, supervised, device);
        let copies = upload::count();
        let args = (lm, adapter, optimizer, &layout, &inputs, batch);
        let recorded =
            device.memory_persistent_allocations(args, |(lm, adapter, optimizer, layout, inputs, batch)| {
                let dispatch = device.as_dispatch();
                if Dispatch::graph_prepare(dispatch).is_err() {
                    return Ok(None);
                }
                let settle = || -> Result<bool> {
                    for _ in 0..SETTLING_PASSES {
                        // Held until the queue has run: burn's fusion skips work whose result is dropped.
                        let out = pass(lm, adapter, optimizer, layout, inputs, batch, recompute)?;
                        device.flush().map_err(|e| err!(Gpu, "GPU flush failed: {e:?}"))?;
                        drop(out);
                    }
                    Ok(upload::count() == copies)
                };
                let settled = settle();
                if !matches!(settled, Ok(true)) || Dispatch::graph_start_capture(dispatch).is_err() {
                    // Closing a capture that was prepared but not opened returns the stream to normal.
                    let _ = Dispatch::graph_stop_capture(dispatch);
                    return settled.map(|_| None);
                }
                let out = pass(lm, adapter, optimizer, layout, inputs, batch, recompute);
                // A recording that fails leaves only its own buffers unusable: the passes run as before.
                let graph = Dispatch::graph_stop_capture(dispatch).ok();
                Ok(out?.zip(graph).map(|((loss_sum, grads, _), graph)| (graph, loss_sum, grads)))
            })?;
        // The trial passes' memory outside the persistent pool is free again: let it go.
        device.memory_cleanup();
        Ok(recorded.map(|(graph, loss_sum, grads)| StepGraph { graph, layout, inputs, loss_sum, grads }))
    }

    /// The step's gradients and summed loss for `batch` (shaped as recorded): writes its inputs
    /// and replays the recording.
    pub(super) fn gradients(&mut self, batch: &Batch, supervised: usize, tokens: usize) -> Result<StepGradients> {
        let device = self.inputs.device();
        let values = upload::floats(self.layout.values(batch, supervised), [self.layout.size], &device);
        self.inputs = kernels::copy_into(self.inputs.clone(), values);
        // SAFETY: every buffer the recording touched lives as long as `self` (the inputs, loss
        // and gradients here, the persistent pool's pages, which the graph guards) or as long as
        // the run (the model's weights; the optimizer's parameters, which the trainer drops this
        // graph before replacing); replays, writes and reads all go through this device's one
        // stream, in order.
        unsafe { Dispatch::graph_replay(device.as_dispatch(), &self.graph) }
            .map_err(|e| err!(Gpu, "replaying a recorded training step failed: {e:?}"))?;
        Ok(StepGradients {
            grads: Grads::Flat(Box::new(self.grads.clone())),
            loss_sum: self.loss_sum.clone(),
            supervised,
            tokens,
        })
    }

    /// A new input buffer holding `batch`'s values.
    fn buffer(layout: &Layout, batch: &Batch, supervised: usize, device: &Device) -> Tensor<1> {
        let values = upload::floats(layout.values(batch, supervised), [layout.size], device);
        kernels::copy_into(Tensor::zeros([layout.size], device), values)
    }
}

/// The forward and backward passes of `batch` with every host input read from `inputs` (laid out
/// as `layout`) and the adapter's parameters from `optimizer`, each layer recomputed in the
/// backward pass when `recompute` (`train::recompute`): the summed loss, the gradients laid end
/// to end (the LoRA gradient sink), and the attention inputs the model asked for. `None` when the
/// model or adapter cannot take its inputs from the device (a split table, no gradient sink).
fn pass(
    lm: &CausalLm,
    adapter: &Adapter,
    optimizer: &AdamW,
    layout: &Layout,
    inputs: &Tensor<1>,
    batch: &Batch,
    recompute: bool,
) -> Result<Option<(Tensor<1>, Tensor<1>, Vec<KernelInputsKey>)>> {
    let tokens = layout.batch * layout.len;
    let part = |at: usize, n: usize| inputs.clone().narrow(0, at, n);
    // Views of the parameters taken here, so that the recording reads them where the optimizer
    // updates them (a view that burn makes as a copy is then a copy each replay).
    let untracked = adapter.with_params(optimizer.views());
    let mut tracked = untracked.tracked();
    let Adapter::Lora(lora) = &mut tracked else { return Ok(None) };
    let Some(sink) = lora.send_gradients_to_sink(tokens) else { return Ok(None) };
    let Some(embeds) = lm.embed_on_device(part(layout.ids, tokens).int()) else { return Ok(None) };
    if !lm.has_unsplit_head() {
        return Ok(None);
    }
    let attention = layout
        .attention
        .iter()
        .map(|p| (p.key.clone(), AttentionInputs::on_device(part(p.at, p.len), p.key.is_some())))
        .collect();
    let mask = Some(batch.attention_mask.as_slice());
    let mut ctx = AttentionContext::with_kernel_inputs(layout.batch, layout.len, mask, attention, lm.device());
    let (targets, counted) = (part(layout.targets, tokens), part(layout.counted, tokens));
    let loss = |hidden: Tensor<2>| {
        let rows = lm.cross_entropy_rows(hidden, targets).expect("the head is one block (checked above)");
        let loss_sum = (rows * counted).sum();
        // transformers divides by the supervised tokens of the step.
        (loss_sum.clone(), loss_sum * part(layout.inverse_supervised, 1))
    };
    let loss_sum = if recompute {
        // The LoRA layers add their gradients to the sink; autodiff gives the leaves none.
        backward_by_layer(lm, &untracked, &tracked, embeds, &mut ctx, loss, &mut Accumulated::new(Vec::new()))
    } else {
        let (loss_sum, differentiated) = loss(lm.hidden(embeds, &mut ctx, tracked.hooks()));
        let _ = differentiated.backward();
        loss_sum
    };
    let keys = ctx.kernel_input_keys();
    Ok(Some((loss_sum.detach().inner(), sink.values(), keys)))
}

/// The trainer's side of recording: which shapes are recorded, and a step's gradients from them.
impl Trainer {
    /// Batch shapes whose passes are recorded (`train::graph`).
    pub fn recorded_shapes(&self) -> usize {
        self.graphs.values().filter(|g| g.is_some()).count()
    }

    /// Turns off (or on, whatever the run's shapes) replaying recorded passes (`train::graph`), for
    /// comparing the two.
    pub fn set_recording(&mut self, recording: bool) {
        self.recording = recording;
        self.prefetched = None;
        self.graphs.clear();
    }

    /// [`Trainer::next_gradients`], from the passes recorded for the batch's shape when the run
    /// allows (recording them the first time the shape comes).
    pub(super) fn issue_gradients(&mut self) -> Result<StepGradients> {
        let (batches, supervised, tokens) = self.next_batches()?;
        self.batch_gradients(batches, supervised, tokens)
    }

    /// [`Trainer::gradients`] of `micro_batches`, replaying the passes recorded for the batch's
    /// shape when there is one batch and the run allows (recording them the first time).
    pub(super) fn batch_gradients(
        &mut self,
        micro_batches: Vec<Batch>,
        supervised: usize,
        tokens: usize,
    ) -> Result<StepGradients> {
        if let [batch] = micro_batches.as_slice()
            && self.record(batch, supervised)?
            && let Some(Some(graph)) = self.graphs.get_mut(&(batch.batch, batch.len))
        {
            return graph.gradients(batch, supervised, tokens);
        }
        self.gradients(&micro_batches, supervised, tokens)
    }

    /// Records the passes of `batch`'s shape unless done or tried before; whether the shape has a
    /// recording.
    pub(super) fn record(&mut self, batch: &Batch, supervised: usize) -> Result<bool> {
        if !self.recording {
            return Ok(false);
        }
        let shape = (batch.batch, batch.len);
        if !self.graphs.contains_key(&shape) {
            let (lm, adapter, recompute) = (&self.lm, &self.adapter, self.config.recompute_layers);
            let graph = match StepGraph::may_record(adapter, self.config.grad_accum, lm.device()) {
                true => StepGraph::record(lm, adapter, &self.optimizer, batch, supervised, recompute)?,
                false => None,
            };
            self.graphs.insert(shape, graph);
        }
        Ok(matches!(self.graphs.get(&shape), Some(Some(_))))
    }
}
