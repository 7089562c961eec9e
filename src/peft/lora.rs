//! LoRA as PEFT defines it: `y = W x + scale · B A dropout(x)` on the targeted linear layers,
//! `A [r, in]`, `B [out, r]`, `scale = alpha / r` (or `alpha / sqrt(r)` with rsLoRA).
//!
//! PiSSA initialises `A`, `B` from the top singular vectors of `W` and trains against the residual
//! `W - scale · B₀ A₀`. The base weights here are shared and frozen, so the residual is applied as
//! `- scale · B₀ A₀ x` with the frozen initial factors: the same function without copying `W`.
//!
//! DoRA (PEFT `use_dora`, `tuners/lora/dora.py` `DoraLinearLayer`) adds a trainable magnitude
//! `m [out]` per layer and rescales each output row: with `V = W + scale · B A` (the residual base
//! for PiSSA) and `n = ‖V‖` per output row, detached from the gradient (DoRA paper §4.3),
//! `y = (m / n) ⊙ x Vᵀ + b`. The bias is not rescaled. `m` starts at `n`, so the adapter starts as
//! plain LoRA does.

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::error::Result;
use crate::kernels::{self, GradientSink, SinkSlot};
use crate::model::{CausalLm, LayerHooks, Linear, WeightLayout};
pub use crate::peft::lora_config::{LoraConfig, LoraInit, default_targets};
pub(crate) use crate::peft::lora_config::{every_target_is_linear, module_matches};
use crate::peft::svd;
use crate::readback;
use crate::rng::{Rng, Stream};

/// The adapter of one linear layer.
#[derive(Clone)]
pub struct LoraModule {
    /// HF module path of the adapted layer (`model.layers.0.self_attn.q_proj`).
    pub path: String,
    pub slot: usize,
    /// Storage of the adapted weight (`InOut` = GPT-2 Conv1D, PEFT's `fan_in_fan_out`).
    pub layout: WeightLayout,
    pub scale: f64,
    /// `[r, in]`
    pub a: Tensor<2>,
    /// `[out, r]`
    pub b: Tensor<2>,
    /// PiSSA's frozen initial `(A₀, B₀)`, subtracted to form the residual base.
    pub pissa_initial: Option<(Tensor<2>, Tensor<2>)>,
    /// DoRA's magnitude `m [1, out]` (PEFT's `lora_magnitude_vector`, saved as `[out]`); `None`
    /// for plain LoRA.
    pub magnitude: Option<Tensor<2>>,
}

impl LoraModule {
    /// The adapter of `linear` with factors `a [r, in]`, `b [out, r]`.
    pub fn new(
        linear: &Linear,
        scale: f64,
        a: Tensor<2>,
        b: Tensor<2>,
        pissa_initial: Option<(Tensor<2>, Tensor<2>)>,
    ) -> Self {
        LoraModule {
            path: linear.path.clone(),
            slot: linear.slot,
            layout: linear.layout,
            scale,
            a,
            b,
            pissa_initial,
            magnitude: None,
        }
    }

    pub fn rank(&self) -> usize {
        self.a.dims()[0]
    }

    /// The larger of the layer's input and output widths.
    fn widest(&self) -> usize {
        self.a.dims()[1].max(self.b.dims()[0])
    }

    /// `scale · (z Aᵀ) Bᵀ` for `z [tokens, in]`, never materialising `B A`.
    fn lora(&self, z: Tensor<2>) -> Tensor<2> {
        z.matmul(self.a.clone().transpose()).matmul(self.b.clone().transpose()) * self.scale
    }

    /// The frozen PiSSA part `scale · (z A₀ᵀ) B₀ᵀ` that turns `W` into the residual base, if any.
    fn pissa_part(&self, z: Tensor<2>) -> Option<Tensor<2>> {
        let (a0, b0) = self.pissa_initial.as_ref()?;
        Some(z.matmul(a0.clone().transpose()).matmul(b0.clone().transpose()) * self.scale)
    }

    /// DoRA's row norms `‖W_res + scale · B A‖` as `[1, out]`, detached from the gradient, where
    /// `W_res` is `layer`'s weight minus the PiSSA part (PEFT `get_weight_norm`).
    pub(crate) fn weight_norm(&self, layer: &Linear) -> Tensor<2> {
        let [out, _] = self.b.dims();
        let mut product = self.b.clone().detach().matmul(self.a.clone().detach());
        if let Some((a0, b0)) = &self.pissa_initial {
            product = product - b0.clone().matmul(a0.clone());
        }
        let weight = layer.weight_out_in() + product * self.scale;
        weight.square().sum_dim(1).sqrt().reshape([1, out]).detach()
    }

    /// `(A, B)` of a plain LoRA with this module's effect on the original base weights. PiSSA
    /// trains against the residual `W - scale·B₀A₀`; PEFT's conversion folds that in as
    /// `A' = [A; A₀]`, `B' = [B, -B₀]` (rank 2r, same scale: [`LoraConfig::pissa_as_lora`]).
    pub fn plain_factors(&self) -> (Tensor<2>, Tensor<2>) {
        let (a, b) = (self.a.clone(), self.b.clone());
        match &self.pissa_initial {
            Some((a0, b0)) => (Tensor::cat(vec![a, a0.clone()], 0), Tensor::cat(vec![b, b0.clone().neg()], 1)),
            None => (a, b),
        }
    }
}

/// LoRA adapters for a model: one [`LoraModule`] per adapted layer, in layer order.
#[derive(Clone)]
pub struct LoraAdapter {
    pub config: LoraConfig,
    pub modules: Vec<LoraModule>,
    /// The seed the initial factors were drawn with: randomized PiSSA (`pissa_niter_K`) needs it
    /// to rebuild the same residual when the adapter is read back.
    pub seed: u64,
    /// Module index per linear slot of the model.
    by_slot: Vec<Option<usize>>,
    /// While training with dropout: the keep-probability and the seed of this forward pass's
    /// masks; `None` in evaluation.
    train_dropout: Option<(f64, u64)>,
    /// While computing a step's gradients: where the modules' factor gradients go, and the offset
    /// of each module's `A` in it ([`LoraAdapter::send_gradients_to`]).
    sink: Option<(GradientSink, Vec<usize>)>,
    /// The device's shader loop limit, read once: which layers the fused node may run
    /// ([`kernels::lora_fits`]).
    loop_limit: Option<u64>,
}

impl LoraAdapter {
    /// New adapters initialised as `config.init` says, seeded for reproducibility.
    pub async fn init(lm: &CausalLm, config: LoraConfig, seed: u64) -> Result<Self> {
        let device = lm.device();
        let mut modules = Vec::new();
        for (shape, r, scale) in config.resolve(lm.shape())? {
            let linear = &lm.linears()[shape.slot];
            let (fan_in, fan_out) = (linear.in_features, linear.out_features);
            let mut rng = Rng::stream(seed, Stream::LoraInit { slot: linear.slot });
            let zeros_b = || Tensor::<2>::zeros([fan_out, r], device);
            let (a, b, pissa_initial) = match &config.init {
                LoraInit::Default => {
                    let bound = 1.0 / (fan_in as f64).sqrt();
                    (host_tensor(r, fan_in, || rng.uniform(-bound, bound), device), zeros_b(), None)
                }
                LoraInit::Gaussian => (host_tensor(r, fan_in, || rng.normal() / r as f64, device), zeros_b(), None),
                LoraInit::Pissa { niter } => {
                    let (a, b) = pissa_initial(linear, r, scale, *niter, seed, device).await?;
                    (a.clone(), b.clone(), Some((a, b)))
                }
            };
            modules.push(LoraModule::new(linear, scale, a, b, pissa_initial));
        }
        Ok(Self::from_modules(lm, config, seed, modules))
    }

    /// The same adapter as DoRA (PEFT `use_dora=True`): each module gets a magnitude vector equal
    /// to its current row norms, so the output is unchanged until training moves it. Every entry
    /// of a `target_modules` list must name a linear layer, the only modules DoRA can rescale.
    pub fn with_dora(mut self, lm: &CausalLm) -> Result<Self> {
        if !self.config.target_regex {
            every_target_is_linear("DoRA", &self.config.target_modules, lm.shape())?;
        }
        for m in &mut self.modules {
            m.magnitude = Some(m.weight_norm(&lm.linears()[m.slot]));
        }
        Ok(self)
    }

    pub fn from_modules(lm: &CausalLm, config: LoraConfig, seed: u64, modules: Vec<LoraModule>) -> Self {
        let mut by_slot = vec![None; lm.linears().len()];
        for (i, m) in modules.iter().enumerate() {
            by_slot[m.slot] = Some(i);
        }
        let loop_limit = crate::device::info_of(lm.device()).shader_loop_limit;
        LoraAdapter { config, modules, seed, by_slot, train_dropout: None, sink: None, loop_limit }
    }

    /// Turns dropout on with masks drawn from `seed` (training), or off with `None`.
    pub fn set_training(&mut self, seed: Option<u64>) {
        self.train_dropout = seed.filter(|_| self.config.dropout > 0.0).map(|seed| (1.0 - self.config.dropout, seed));
    }

    /// Sends the factor gradients of the coming backward passes over `rows` rows (at most) to a
    /// new [`GradientSink`], laid out as [`crate::peft::Adapter::params`] orders the factors, and
    /// returns it; `None` when some module runs in composed ops (PiSSA, DoRA, dropout, or a layer
    /// above the device's shader loop limit), whose gradients autodiff keeps.
    pub fn send_gradients_to_sink(&mut self, rows: usize) -> Option<GradientSink> {
        let device = self.modules.first()?.a.device();
        if !self.sends_gradients_to_sink(rows) {
            return None;
        }
        let mut offsets = Vec::with_capacity(self.modules.len());
        let mut len = 0;
        for m in &self.modules {
            offsets.push(len);
            len += m.a.shape().num_elements() + m.b.shape().num_elements();
        }
        let sink = GradientSink::zeros(len, &device);
        self.sink = Some((sink.clone(), offsets));
        Some(sink)
    }

    /// Whether [`LoraAdapter::send_gradients_to_sink`] would give a sink for passes over `rows`.
    pub fn sends_gradients_to_sink(&self, rows: usize) -> bool {
        let plain = self.config.dropout == 0.0 && !self.is_pissa() && !self.is_dora();
        plain && self.modules.iter().all(|m| kernels::lora_fits(rows, m.widest(), self.loop_limit))
    }

    /// Whether this is a PiSSA adapter (trained against the residual base).
    pub fn is_pissa(&self) -> bool {
        self.modules.iter().any(|m| m.pissa_initial.is_some())
    }

    /// Whether this is a DoRA adapter (modules carry magnitude vectors).
    pub fn is_dora(&self) -> bool {
        self.modules.iter().any(|m| m.magnitude.is_some())
    }
}

/// PiSSA's initial factors of one layer, `(A₀ [r, in], B₀ [out, r])`, from the SVD of its weight
/// (randomized with `niter`, drawing from the layer's [`Stream::LoraInit`] of `seed`): what a PiSSA
/// adapter starts from, and what its residual subtracts from the frozen base.
pub(crate) async fn pissa_initial(
    linear: &Linear,
    r: usize,
    scale: f64,
    niter: Option<usize>,
    seed: u64,
    device: &Device,
) -> Result<(Tensor<2>, Tensor<2>)> {
    let (fan_in, fan_out) = (linear.in_features, linear.out_features);
    let weight = readback::floats(linear.weight_out_in()).await?;
    let mut rng = Rng::stream(seed, Stream::LoraInit { slot: linear.slot });
    let (a, b) = svd::pissa_factors(&weight, fan_out, fan_in, r, scale, niter, &mut rng);
    Ok((
        Tensor::from_data(TensorData::new(a, [r, fan_in]), device),
        Tensor::from_data(TensorData::new(b, [fan_out, r]), device),
    ))
}

fn host_tensor(rows: usize, cols: usize, mut sample: impl FnMut() -> f64, device: &Device) -> Tensor<2> {
    let values: Vec<f32> = (0..rows * cols).map(|_| sample() as f32).collect();
    Tensor::from_data(TensorData::new(values, [rows, cols]), device)
}

impl LayerHooks for LoraAdapter {
    fn changes(&self, layer: &Linear) -> bool {
        self.by_slot.get(layer.slot).is_some_and(Option::is_some)
    }

    fn linear(&self, layer: &Linear, x: Tensor<2>) -> Tensor<2> {
        let Some(i) = self.by_slot.get(layer.slot).copied().flatten() else {
            return layer.forward_base(x);
        };
        let m = &self.modules[i];
        let dropped = self.dropped(layer.slot, &x);
        let plain = m.magnitude.is_none() && m.pissa_initial.is_none() && dropped.is_none();
        if plain && kernels::lora_fits(x.dims()[0], m.widest(), self.loop_limit) {
            let slot = self.sink.as_ref().map(|(sink, offsets)| {
                let a_at = offsets[i];
                SinkSlot { sink: sink.clone(), a_at, b_at: a_at + m.a.shape().num_elements() }
            });
            return layer.forward_lora(x, m.a.clone(), m.b.clone(), m.scale, slot);
        }
        assert!(self.sink.is_none(), "a gradient sink was set for a layer that runs in composed ops");
        let Some(magnitude) = &m.magnitude else {
            let base = layer.forward_base(x.clone());
            let mut delta = m.lora(dropped.unwrap_or_else(|| x.clone()));
            if let Some(p) = m.pissa_part(x) {
                delta = delta - p;
            }
            return base + delta;
        };
        // PEFT's DoraLinearLayer.forward: result + (g - 1) ⊙ base_result_without_bias + g ⊙ lora,
        // with g = m / n; under dropout the (g - 1) term uses the dropped input.
        let g = magnitude.clone() / m.weight_norm(layer);
        let mut base = layer.forward_base(x.clone());
        if let Some(p) = m.pissa_part(x.clone()) {
            base = base - p;
        }
        let rescaled = match &dropped {
            Some(xd) => {
                let mut y = layer.matmul(xd.clone());
                if let Some(p) = m.pissa_part(xd.clone()) {
                    y = y - p;
                }
                y
            }
            None => match layer.bias() {
                Some(bias) => base.clone() - bias.clone().unsqueeze_dim(0),
                None => base.clone(),
            },
        };
        let lora = m.lora(dropped.unwrap_or(x));
        base + ((g.clone() - 1.0) * rescaled + g * lora)
    }
}

impl LoraAdapter {
    /// `dropout(x)` for the layer in `slot` while training with dropout, else `None`.
    fn dropped(&self, slot: usize, x: &Tensor<2>) -> Option<Tensor<2>> {
        let (keep, seed) = self.train_dropout?;
        let seed = Rng::stream(seed, Stream::LayerDropout { slot }).next_u64() as u32;
        Some(x.clone() * dropout_mask(x.dims(), keep, seed, &x.device()) / keep)
    }
}

/// A dropout keep-mask (1 with probability `keep`, else 0) that is a pure function of `seed` and
/// each element's index: a 32-bit integer hash computed on the GPU. Unlike the device's random
/// generator, it has no global state, so a step's masks are the same whatever else runs (resumed
/// runs, parallel tests, the browser and the CLI).
fn dropout_mask(shape: [usize; 2], keep: f64, seed: u32, device: &Device) -> Tensor<2> {
    let count = shape[0] * shape[1];
    // WGSL i32 arithmetic wraps; `>>` is arithmetic, so each shift is masked to make it logical.
    let shift = |x: Tensor<1, Int>, bits: u32| {
        x.clone().bitwise_xor(
            x.bitwise_right_shift_scalar(bits as i32).bitwise_and_scalar(((1u32 << (32 - bits)) - 1) as i32),
        )
    };
    let x = Tensor::<1, Int>::arange(0..count as i64, device).bitwise_xor_scalar(seed as i32);
    let x = shift(x, 16).mul_scalar(0x7feb_352d_u32 as i32);
    let x = shift(x, 15).mul_scalar(0x846c_a68b_u32 as i32);
    let x = shift(x, 16);
    let uniform = x.bitwise_and_scalar(0x00FF_FFFF).float() / 16_777_216.0;
    uniform.lower_elem(keep).float().reshape(shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropout_masks_are_deterministic_and_keep_the_right_fraction() {
        let device = crate::device::gpu().unwrap().0;
        let read = |seed| {
            burn::tensor::read_sync(crate::readback::floats(dropout_mask([64, 256], 0.9, seed, &device))).unwrap()
        };
        let (a, b, c) = (read(1), read(1), read(2));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.iter().all(|&v| v == 0.0 || v == 1.0));
        let kept = a.iter().sum::<f32>() / a.len() as f32;
        assert!((kept - 0.9).abs() < 0.01, "kept {kept}");
    }
}
