//! Layer-by-layer recomputation (gradient checkpointing at decoder-layer granularity, as
//! transformers' `gradient_checkpointing_enable` does per layer): the forward pass runs without an
//! autodiff graph and keeps only the residual stream entering each decoder layer
//! (`tokens × hidden` floats per layer); the backward pass then goes from the loss down, rebuilding
//! one layer's graph at a time from its saved input and back-propagating the stream's gradient
//! through it. Activation memory is that of one layer plus the saved inputs, instead of every
//! layer's, for one more forward pass of the layers. The gradients are the same as those of
//! [`super::loss_sum`]'s single backward pass: dropout masks are a function of the seed and the
//! layer alone, so the recomputed layer draws the masks the first pass drew.

use burn::tensor::{Gradients, Tensor};

use super::Supervised;
use crate::data::Batch;
use crate::error::Result;
use crate::model::CausalLm;
use crate::model::attention::AttentionContext;
use crate::peft::Adapter;

/// The gradients of the trainable tensors (autodiff leaves) summed over several backward passes.
pub(super) struct Accumulated {
    leaves: Vec<Tensor<2>>,
    sums: Vec<Option<Tensor<2>>>,
}

impl Accumulated {
    pub fn new(leaves: Vec<Tensor<2>>) -> Self {
        let sums = vec![None; leaves.len()];
        Accumulated { leaves, sums }
    }

    /// Adds what one backward pass computed for each leaf.
    pub fn add(&mut self, gradients: Gradients) {
        for (sum, leaf) in self.sums.iter_mut().zip(&self.leaves) {
            if let Some(g) = leaf.grad(&gradients) {
                *sum = Some(match sum.take() {
                    Some(s) => s + g,
                    None => g,
                });
            }
        }
    }

    /// The sums, in leaf order; zeros for a leaf no pass reached.
    pub fn finish(self) -> Vec<Tensor<2>> {
        self.sums.into_iter().zip(self.leaves).map(|(g, leaf)| g.unwrap_or_else(|| leaf.inner().zeros_like())).collect()
    }
}

/// The forward pass through every decoder layer of `stream` (the residual stream entering the
/// first) under `adapter`, keeping the stream entering each layer: `(inputs, last stream)`.
/// Without a graph when `stream` and `adapter`'s tensors are plain.
pub fn layer_inputs(
    lm: &CausalLm,
    adapter: &Adapter,
    stream: Tensor<2>,
    ctx: &mut AttentionContext,
) -> (Vec<Tensor<2>>, Tensor<2>) {
    let mut x = stream;
    let mut inputs = Vec::with_capacity(lm.config.num_layers);
    for l in 0..lm.config.num_layers {
        inputs.push(x.clone());
        x = lm.layer(l, x, ctx, adapter.hooks());
    }
    (inputs, x)
}

/// The summed loss of `batch` (autodiff-free) and, added to `grads`, the gradients of
/// `loss / divisor`, computed layer by layer. `untracked` is the adapter with plain tensors (the
/// forward pass), `tracked` the same values as autodiff leaves (the recomputed layers), both with
/// the same dropout seed.
pub(super) fn loss_and_gradients(
    lm: &CausalLm,
    untracked: &Adapter,
    tracked: &Adapter,
    batch: &Batch,
    supervised: &Supervised,
    divisor: usize,
    grads: &mut Accumulated,
) -> Result<Tensor<1>> {
    let (embeds, mut ctx) = tracked.inputs(lm, &batch.input_ids, batch.batch, Some(&batch.attention_mask), None)?;
    let loss = |hidden| {
        let sum = supervised.loss_sum(lm, hidden);
        (sum.clone(), sum / divisor as f64)
    };
    Ok(backward_by_layer(lm, untracked, tracked, embeds, &mut ctx, loss, grads))
}

/// [`loss_and_gradients`] from input embeddings and their attention context, with `loss` giving
/// the summed loss of the final hidden states and the value to differentiate (the recorded step's
/// as well, `train::graph`).
pub(super) fn backward_by_layer(
    lm: &CausalLm,
    untracked: &Adapter,
    tracked: &Adapter,
    embeds: Tensor<2>,
    ctx: &mut AttentionContext,
    loss: impl FnOnce(Tensor<2>) -> (Tensor<1>, Tensor<1>),
    grads: &mut Accumulated,
) -> Tensor<1> {
    let layers = lm.config.num_layers;

    // Forward: no graph, each layer's input kept.
    let plain = if embeds.is_autodiff() { embeds.clone().inner() } else { embeds.clone() };
    let (mut inputs, x) = layer_inputs(lm, untracked, lm.stream(plain, ctx), ctx);

    // The loss from the last stream, and the stream's gradient.
    let stream = x.autodiff().require_grad();
    let (sum, differentiated) = loss(lm.final_norm(stream.clone()));
    let gradients = differentiated.backward();
    let mut upstream = stream.grad(&gradients).expect("the residual stream reaches the loss");
    grads.add(gradients);

    // Backward: each layer again, with a graph, from its saved input.
    for l in (0..layers).rev() {
        let input = inputs.pop().expect("one saved input per layer").autodiff().require_grad();
        let output = lm.layer(l, input.clone(), ctx, tracked.hooks());
        let gradients = (output * upstream.autodiff()).sum().backward();
        upstream = input.grad(&gradients).expect("a layer's input reaches its output");
        grads.add(gradients);
    }

    // A soft prompt is trained through the embeddings.
    if embeds.is_autodiff() {
        grads.add((lm.stream(embeds, ctx) * upstream.autodiff()).sum().backward());
    }
    sum
}
