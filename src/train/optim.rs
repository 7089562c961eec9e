//! AdamW with `torch.optim.AdamW` semantics (single-tensor path): decoupled weight decay
//! `p ← p·(1 − lr·wd)`, bias-corrected moments, and `eps` added after dividing `√v` by
//! `√(1 − β₂ᵗ)`:  `p ← p − lr/(1 − β₁ᵗ) · m / (√v/√(1 − β₂ᵗ) + eps)`; the gradient first clipped
//! to a global norm as `torch.nn.utils.clip_grad_norm_` does.
//!
//! All trainable values are updated at once, laid end to end in one flat buffer: one kernel
//! ([`kernels::adamw`]) instead of a few per parameter tensor, in place on the GPU. The gradients
//! are laid end to end and their global norm taken by [`kernels::gather`], a few tensors per
//! dispatch rather than one.

use burn::tensor::{Device, Tensor};

use crate::error::Result;
use crate::kernels::{self, AdamWStep};
use crate::model::weights::HostTensor;
use crate::readback;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

/// Optimizer state: the parameters it updates, their first and second moments and the step count.
#[derive(Clone)]
pub struct AdamW {
    pub config: AdamWConfig,
    /// Steps taken so far (torch's `state["step"]`).
    pub t: usize,
    /// `[n]`: every parameter, end to end in parameter order. The adapter holds views of it, so an
    /// update needs no copy to lay them end to end again (and on the GPU, where the update is in
    /// place, the views see it).
    params: Tensor<1>,
    /// `[2, n]`: the first and the second moment of all parameters, end to end in parameter order.
    moments: Tensor<2>,
    /// Each parameter's shape, in order.
    shapes: Vec<[usize; 2]>,
}

impl AdamW {
    /// An optimizer for `params`; returns them as views of its flat copy, which the caller
    /// should use from now on (see [`AdamW::set_params`]).
    pub fn new(config: AdamWConfig, params: Vec<Tensor<2>>) -> (Self, Vec<Tensor<2>>) {
        let shapes: Vec<[usize; 2]> = params.iter().map(|p| p.dims()).collect();
        let n = shapes.iter().map(|[r, c]| r * c).sum();
        let device = params.first().expect("an optimizer needs parameters").device();
        let optimizer =
            AdamW { config, t: 0, params: Self::flatten(params), moments: Tensor::zeros([2, n], &device), shapes };
        let views = optimizer.views();
        (optimizer, views)
    }

    /// Replaces the parameters the next update starts from (a resumed run, the best adapter);
    /// returns them as views of the optimizer's flat copy.
    pub fn set_params(&mut self, params: Vec<Tensor<2>>) -> Vec<Tensor<2>> {
        self.params = Self::flatten(params);
        self.views()
    }

    /// The parameters, as views of the flat copy (what the adapter holds).
    pub fn views(&self) -> Vec<Tensor<2>> {
        self.split(self.params.clone())
    }

    /// The parameters copied to the host, per parameter in order: one read of the flat copy.
    pub async fn host_params(&self) -> Result<Vec<HostTensor>> {
        let flat = readback::floats(self.params.clone()).await?;
        let mut start = 0;
        Ok(self
            .shapes
            .iter()
            .map(|&[r, c]| {
                let data = flat[start..start + r * c].to_vec();
                start += r * c;
                HostTensor { shape: vec![r, c], data }
            })
            .collect())
    }

    /// The first and second moments per parameter (views of the state, no copy).
    pub fn moments(&self) -> (Vec<Tensor<2>>, Vec<Tensor<2>>) {
        let [_, n] = self.moments.dims();
        let row = |i| self.moments.clone().narrow(0, i, 1).reshape([n]);
        (self.split(row(0)), self.split(row(1)))
    }

    /// Replaces the moments (a resumed run), per parameter in order.
    pub fn set_moments(&mut self, m: Vec<Tensor<2>>, v: Vec<Tensor<2>>) {
        self.moments = Tensor::stack(vec![Self::flatten(m), Self::flatten(v)], 0);
    }

    /// The scalars of the next update (step `t + 1`) at learning rate `lr`, the gradients' global
    /// norm clipped to `clip`.
    pub fn next_step(&self, lr: f64, clip: Option<f64>) -> AdamWStep {
        let c = self.config;
        let t = (self.t + 1) as i32;
        AdamWStep {
            decay: (1.0 - lr * c.weight_decay) as f32,
            one_minus_beta1: (1.0 - c.beta1) as f32,
            beta2: c.beta2 as f32,
            one_minus_beta2: (1.0 - c.beta2) as f32,
            bias2_sqrt: (1.0 - c.beta2.powi(t)).sqrt() as f32,
            eps: c.eps as f32,
            step_size: (lr / (1.0 - c.beta1.powi(t))) as f32,
            clip: clip.map_or(0.0, |clip| clip as f32),
        }
    }

    /// One update of every parameter with its gradient at learning rate `lr`, after clipping the
    /// gradients' global norm to `clip`. Returns the updated parameters (views of the flat copy)
    /// and the norm before clipping, `[1]`.
    pub fn step(&mut self, grads: Vec<Tensor<2>>, lr: f64, clip: Option<f64>) -> (Vec<Tensor<2>>, Tensor<1>) {
        let scalars = upload(&self.next_step(lr, clip), &self.params.device());
        self.update(grads, scalars)
    }

    /// [`AdamW::step`] with the update's scalars already on the device (`[AdamWStep::LEN]`, the
    /// values of [`AdamW::next_step`], or of [`AdamWStep::unchanged`] for a pass that must not
    /// train); counts the step.
    pub fn update(&mut self, grads: Vec<Tensor<2>>, scalars: Tensor<1>) -> (Vec<Tensor<2>>, Tensor<1>) {
        self.t += 1;
        let (grad, norm) = kernels::gather(grads);
        let (params, moments) = kernels::adamw(self.params.clone(), grad, self.moments.clone(), norm.clone(), scalars);
        self.params = params;
        self.moments = moments;
        (self.views(), norm)
    }

    /// Parameters end to end, `[n]`.
    fn flatten(tensors: Vec<Tensor<2>>) -> Tensor<1> {
        Tensor::cat(
            tensors
                .into_iter()
                .map(|t| {
                    let [r, c] = t.dims();
                    t.reshape([r * c])
                })
                .collect(),
            0,
        )
    }

    /// `flat [n]` cut back into the parameters' shapes (views, no copy).
    fn split(&self, flat: Tensor<1>) -> Vec<Tensor<2>> {
        split(flat, self.shapes.iter().copied())
    }
}

/// `step`'s scalars as the update reads them, `[AdamWStep::LEN]`.
pub fn upload(step: &AdamWStep, device: &Device) -> Tensor<1> {
    crate::upload::floats(step.values().to_vec(), [AdamWStep::LEN], device)
}

/// `flat [n]` cut into consecutive tensors of `shapes`, row-major (views, no copy).
pub(super) fn split(flat: Tensor<1>, shapes: impl IntoIterator<Item = [usize; 2]>) -> Vec<Tensor<2>> {
    let mut start = 0;
    shapes
        .into_iter()
        .map(|[r, c]| {
            let part = flat.clone().narrow(0, start, r * c).reshape([r, c]);
            start += r * c;
            part
        })
        .collect()
}
