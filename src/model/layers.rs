//! Building blocks shared by the architectures. Activations travel as 2-D `[tokens, features]`
//! f32 tensors between blocks (tokens = batch × sequence); only attention reshapes to 4-D. The
//! frozen matrices may be stored in f16 ([`crate::model::LoadOptions`]) while activations,
//! adapters, gradients and every sum stay f32. burn 0.22 has no mixed-dtype matmul (Flex asserts
//! equal dtypes, CubeCL's unfused kernel reads the right operand with the left one's dtype), so
//! the linear layers' product ([`Linear::matmul`]) and the loss's LM head
//! (`kernels::cross_entropy_sum`) go through [`crate::kernels::frozen_matmul`], which on the GPU
//! reads an f16 weight as stored (on the CPU it casts for each product); other reads of a frozen
//! matrix (embedding rows, norm weights) cast what they read.

use burn::tensor::{DType, Device, FloatDType, Tensor, activation};

use crate::kernels::SinkSlot;
use crate::model::config::{Activation, RopeConfig, RopeScaling};
use crate::model::weights::{WeightSpec, Weights};

/// How a linear layer's weight is stored on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightLayout {
    /// `nn.Linear`: `[out, in]`.
    OutIn,
    /// GPT-2's `Conv1D`: `[in, out]` (PEFT's `fan_in_fan_out`).
    InOut,
}

/// Where an adapter can sit in a decoder layer besides its linear layers: the residual add after
/// the attention sub-block or after the MLP sub-block (AdapterHub's `mh_adapter` and
/// `output_adapter` positions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubBlock {
    Attention,
    Mlp,
}

/// How an adapter changes the frozen base model. The base model knows nothing about adapters: at
/// every linear layer and at every residual add it asks these hooks, whose defaults compute what
/// the base model alone computes. Linear layers are identified by their slot (their index in
/// [`crate::model::CausalLm::linears`]) and HF module path.
pub trait LayerHooks {
    /// `layer(x)` for `x [tokens, in]` → `[tokens, out]`, as the adapter changes it (LoRA adds
    /// `s·B A x`, IA3 scales an input or output, DoRA rescales the rows).
    fn linear(&self, layer: &Linear, x: Tensor<2>) -> Tensor<2> {
        layer.forward_base(x)
    }

    /// Whether [`LayerHooks::linear`] computes anything but the frozen `layer`: frozen layers
    /// that read the same input may then run as one product ([`gated_activation`]).
    fn changes(&self, layer: &Linear) -> bool;

    /// The residual stream after sub-block `site` of decoder layer `layer`: `x + h`, where `x`
    /// `[tokens, hidden]` is the stream that entered the sub-block and `h` its output.
    fn residual(&self, layer: usize, site: SubBlock, x: Tensor<2>, h: Tensor<2>) -> Tensor<2> {
        let _ = (layer, site);
        x + h
    }
}

/// The base model: no adapter.
pub struct NoAdapter;

impl LayerHooks for NoAdapter {
    fn changes(&self, _: &Linear) -> bool {
        false
    }
}

/// A linear layer's place and size without its weight: known from config.json alone
/// ([`crate::model::ModelShape`]), it is what adapters resolve their targets against and what run
/// facts read. `slot` indexes [`crate::model::CausalLm::linears`].
#[derive(Clone, Debug, PartialEq)]
pub struct LinearShape {
    pub path: String,
    pub slot: usize,
    pub in_features: usize,
    pub out_features: usize,
    pub layout: WeightLayout,
}

/// A frozen linear layer, named by its HF module path (`model.layers.0.self_attn.q_proj`). Its
/// weight is stored at the model's storage width; every accessor returns f32.
#[derive(Clone)]
pub struct Linear {
    pub path: String,
    pub slot: usize,
    pub in_features: usize,
    pub out_features: usize,
    pub layout: WeightLayout,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
}

impl Linear {
    /// `x [tokens, in] -> [tokens, out]`, as `hooks` change this layer.
    pub fn forward(&self, x: Tensor<2>, hooks: &dyn LayerHooks) -> Tensor<2> {
        hooks.linear(self, x)
    }

    /// The frozen layer alone: `x·W + b`.
    pub fn forward_base(&self, x: Tensor<2>) -> Tensor<2> {
        self.with_bias(self.matmul(x))
    }

    /// `x·W + b + scale · (x·Aᵀ)·Bᵀ` for LoRA factors `a [r, in]`, `b [out, r]`, as one graph node
    /// ([`crate::kernels::lora_linear`], whose `slot` says where the factors' gradients go).
    pub fn forward_lora(
        &self,
        x: Tensor<2>,
        a: Tensor<2>,
        b: Tensor<2>,
        scale: f64,
        slot: Option<SinkSlot>,
    ) -> Tensor<2> {
        let transposed = self.layout == WeightLayout::OutIn;
        self.with_bias(crate::kernels::lora_linear(x, self.weight.clone(), transposed, a, b, scale, slot))
    }

    /// `y + b` over the rows of `y [tokens, out]`, where the layer has a bias.
    fn with_bias(&self, y: Tensor<2>) -> Tensor<2> {
        match &self.bias {
            Some(bias) => y + bias.clone().unsqueeze_dim(0),
            None => y,
        }
    }

    /// `x·W` without the bias, in f32. A weight stored in f16 goes through
    /// [`crate::kernels::frozen_matmul`], so that training keeps the f16 weight for the backward
    /// pass rather than an f32 copy of it.
    pub fn matmul(&self, x: Tensor<2>) -> Tensor<2> {
        if self.weight.dtype() == DType::F32 {
            x.matmul(self.weight_in_out())
        } else {
            crate::kernels::frozen_matmul(x, self.weight.clone(), self.layout == WeightLayout::OutIn)
        }
    }

    pub fn bias(&self) -> Option<&Tensor<1>> {
        self.bias.as_ref()
    }

    pub fn has_bias(&self) -> bool {
        self.bias.is_some()
    }

    /// The weight as `[in, out]` in f32 (for `nn.Linear` a transposed view of the f32 weight).
    pub fn weight_in_out(&self) -> Tensor<2> {
        let weight = to_f32(self.weight.clone());
        match self.layout {
            WeightLayout::OutIn => weight.transpose(),
            WeightLayout::InOut => weight,
        }
    }

    /// The weight as `[out, in]` in f32, the convention of LoRA's `B A` product.
    pub fn weight_out_in(&self) -> Tensor<2> {
        let weight = to_f32(self.weight.clone());
        match self.layout {
            WeightLayout::OutIn => weight,
            WeightLayout::InOut => weight.transpose(),
        }
    }
}

/// Declares linear layers in a [`WeightSpec`] and later builds them with consecutive slots.
#[derive(Default)]
pub struct LinearTable {
    pub layers: Vec<Linear>,
}

impl LinearTable {
    /// Declares the layer's weight (and bias) and its [`LinearShape`], in slot order: `build`
    /// must then build the layers in the order they were declared.
    pub fn declare(spec: &mut WeightSpec, path: &str, in_f: usize, out_f: usize, layout: WeightLayout, bias: bool) {
        let shape = match layout {
            WeightLayout::OutIn => [out_f, in_f],
            WeightLayout::InOut => [in_f, out_f],
        };
        spec.add(format!("{path}.weight"), &shape);
        if bias {
            spec.add(format!("{path}.bias"), &[out_f]);
        }
        spec.add_linear(LinearShape { path: path.to_owned(), slot: 0, in_features: in_f, out_features: out_f, layout });
    }

    pub fn build(
        &mut self,
        weights: &mut Weights,
        path: &str,
        in_features: usize,
        out_features: usize,
        layout: WeightLayout,
        bias: bool,
    ) -> Linear {
        let linear = Linear {
            path: path.to_owned(),
            slot: self.layers.len(),
            in_features,
            out_features,
            layout,
            weight: weights.take(&format!("{path}.weight")),
            bias: bias.then(|| weights.take(&format!("{path}.bias"))),
        };
        self.layers.push(linear.clone());
        linear
    }
}

/// Packs the weights of the gate and up projections of the MLP at `mlp` (`model.layers.0.mlp`)
/// end to end ([`WeightSpec::pack`]), for [`gated_activation`].
pub fn pack_gate_up(spec: &mut WeightSpec, mlp: &str) {
    let part = |name: &str| format!("{mlp}.{name}.weight");
    spec.pack(part("gate_up_proj"), [part("gate_proj"), part("up_proj")]);
}

/// The packed gate and up projections of [`pack_gate_up`], as one frozen `[2 · intermediate,
/// hidden]` layer (not one of the model's layers: no slot, never passed to [`LayerHooks`]), if
/// their weights were packed.
pub fn take_gate_up(weights: &mut Weights, mlp: &str, hidden: usize) -> Option<Linear> {
    let weight: Tensor<2> = weights.take_packed(&format!("{mlp}.gate_up_proj.weight"))?;
    Some(Linear {
        path: format!("{mlp}.gate_up_proj"),
        slot: usize::MAX,
        in_features: hidden,
        out_features: weight.dims()[0],
        layout: WeightLayout::OutIn,
        weight,
        bias: None,
    })
}

/// `act(gate(h)) · up(h)`, the gated MLP's activation of `h [tokens, hidden]`. Where the two
/// layers' weights are packed (`gate_up`, [`take_gate_up`]) and no adapter changes either, one
/// product gives both and the activation reads them from it ([`crate::kernels::glu_packed`]):
/// in training one matmul fewer each way and no sum of the two input gradients.
pub fn gated_activation(
    gate: &Linear,
    up: &Linear,
    gate_up: Option<&Linear>,
    h: Tensor<2>,
    act: Activation,
    hooks: &dyn LayerHooks,
) -> Tensor<2> {
    match gate_up {
        Some(both) if !hooks.changes(gate) && !hooks.changes(up) => {
            crate::kernels::glu_packed(both.forward_base(h), act)
        }
        _ => crate::kernels::glu(gate.forward(h.clone(), hooks), up.forward(h, hooks), act),
    }
}

/// The f32 value of a stored tensor (a no-op for f32 storage).
pub fn to_f32<const D: usize>(t: Tensor<D>) -> Tensor<D> {
    t.cast(FloatDType::F32)
}

/// RMSNorm over the last dimension: `x / sqrt(mean(x²) + eps) · gain`, with gain = `weight`
/// (Llama, Qwen) or `1 + weight` (Gemma, whose norm weights are stored as offsets from 1; the
/// sum is formed in f32 once at load, as transformers forms it in f32 on every call).
pub struct RmsNorm {
    gain: Tensor<1>,
    eps: f64,
}

impl RmsNorm {
    pub fn declare(spec: &mut WeightSpec, path: &str, dim: usize) {
        spec.add(format!("{path}.weight"), &[dim]);
    }

    /// Gain = the stored weight.
    pub fn build(weights: &mut Weights, path: &str, eps: f64) -> Self {
        RmsNorm { gain: weights.take(&format!("{path}.weight")), eps }
    }

    /// Gain = 1 + the stored weight (Gemma's `Gemma3RMSNorm`).
    pub fn build_offset(weights: &mut Weights, path: &str, eps: f64) -> Self {
        let weight: Tensor<1> = weights.take(&format!("{path}.weight"));
        RmsNorm { gain: weight + 1.0, eps }
    }

    /// Normalises `x [rows, dim]` row by row (one fused kernel each way, [`crate::kernels::rms_norm`]).
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        crate::kernels::rms_norm(x, self.gain.clone(), self.eps, 0.0)
    }

    /// Normalises each head of `x [tokens, heads·head_dim]` over `head_dim` (Qwen3's and
    /// Gemma 3's `q_norm` / `k_norm`).
    pub fn forward_heads(&self, x: Tensor<2>) -> Tensor<2> {
        let [tokens, width] = x.dims();
        let d = self.gain.dims()[0];
        self.forward(x.reshape([tokens * width / d, d])).reshape([tokens, width])
    }
}

/// GPT-2's LayerNorm: `(x - mean) / sqrt(var + eps) · weight + bias` (biased variance).
pub struct LayerNorm {
    weight: Tensor<1>,
    bias: Tensor<1>,
    eps: f64,
}

impl LayerNorm {
    pub fn declare(spec: &mut WeightSpec, path: &str, dim: usize) {
        spec.add(format!("{path}.weight"), &[dim]);
        spec.add(format!("{path}.bias"), &[dim]);
    }

    pub fn build(weights: &mut Weights, path: &str, eps: f64) -> Self {
        LayerNorm { weight: weights.take(&format!("{path}.weight")), bias: weights.take(&format!("{path}.bias")), eps }
    }

    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let (var, mean) = x.clone().var_mean_bias(1);
        let normed = (x - mean) / (var + self.eps).sqrt();
        normed * self.weight.clone().unsqueeze_dim(0) + self.bias.clone().unsqueeze_dim(0)
    }
}

/// Rotary position embedding tables for one forward pass, computed on the host in f32 exactly as
/// transformers computes them (`inv_freq`, then `cos`/`sin` of `position · inv_freq`).
#[derive(Clone)]
pub struct Rope {
    cos: Tensor<4>,
    sin: Tensor<4>,
}

impl Rope {
    /// Tables for positions `start .. start + len`, shaped `[1, 1, len, head_dim]`.
    pub fn new(config: &RopeConfig, head_dim: usize, start: usize, len: usize, device: &Device) -> Self {
        let (cos, sin) = Self::tables(config, head_dim, start, len);
        let table = |v| crate::upload::floats(v, [1, 1, len, head_dim], device);
        Rope { cos: table(cos), sin: table(sin) }
    }

    /// The `cos` and `sin` tables `[len, head_dim]`, row-major, of positions `start .. start + len`
    /// (transformers' `cat(freqs, freqs)` layout).
    pub fn tables(config: &RopeConfig, head_dim: usize, start: usize, len: usize) -> (Vec<f32>, Vec<f32>) {
        let inv_freq = inverse_frequencies(config, head_dim);
        let mut cos = Vec::with_capacity(len * head_dim);
        let mut sin = Vec::with_capacity(len * head_dim);
        for pos in start..start + len {
            // Each half of a row holds the same values: computed once (the host's sin and cos
            // are not free in wasm), then repeated.
            let (row_sin, row_cos): (Vec<f32>, Vec<f32>) = inv_freq.iter().map(|&f| (pos as f32 * f).sin_cos()).unzip();
            for _ in 0..2 {
                cos.extend_from_slice(&row_cos);
                sin.extend_from_slice(&row_sin);
            }
        }
        (cos, sin)
    }

    /// `x·cos + rotate_half(x)·sin` for `x [batch, heads, len, head_dim]`.
    pub fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let [_, _, _, d] = x.dims();
        let first = x.clone().narrow(3, 0, d / 2);
        let second = x.clone().narrow(3, d / 2, d / 2);
        let rotated = Tensor::cat(vec![second.neg(), first], 3);
        x * self.cos.clone() + rotated * self.sin.clone()
    }
}

fn inverse_frequencies(config: &RopeConfig, head_dim: usize) -> Vec<f32> {
    let base = config.theta as f32;
    let freqs = (0..head_dim / 2).map(|i| 1.0 / base.powf((2 * i) as f32 / head_dim as f32));
    match config.scaling {
        RopeScaling::Default => freqs.collect(),
        RopeScaling::Linear { factor } => freqs.map(|f| f / factor as f32).collect(),
        RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_positions } => {
            // transformers' `_compute_llama3_parameters`.
            let (factor, low, high, old) =
                (factor as f32, low_freq_factor as f32, high_freq_factor as f32, original_max_positions as f32);
            let low_wavelen = old / low;
            let high_wavelen = old / high;
            freqs
                .map(|f| {
                    let wavelen = 2.0 * std::f32::consts::PI / f;
                    if wavelen > low_wavelen {
                        f / factor
                    } else if wavelen < high_wavelen {
                        f
                    } else {
                        let smooth = (old / wavelen - low) / (high - low);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
        }
    }
}

/// The MLP non-linearity of [`crate::model::config::Activation`].
pub fn activate(x: Tensor<2>, act: crate::model::config::Activation) -> Tensor<2> {
    use crate::model::config::Activation;
    match act {
        Activation::Silu => activation::silu(x),
        Activation::GeluTanh => activation::gelu_approximate(x),
        Activation::GeluErf => activation::gelu(x),
    }
}
