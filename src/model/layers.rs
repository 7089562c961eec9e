//! Building blocks shared by the architectures. Activations travel as 2-D `[tokens, features]`
//! tensors between blocks (tokens = batch × sequence); only attention reshapes to 4-D.

use burn::tensor::{Device, Tensor, TensorData, activation};

use crate::model::config::{RopeConfig, RopeScaling};
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

    /// The residual stream after sub-block `site` of decoder layer `layer`: `x + h`, where `x`
    /// `[tokens, hidden]` is the stream that entered the sub-block and `h` its output.
    fn residual(&self, layer: usize, site: SubBlock, x: Tensor<2>, h: Tensor<2>) -> Tensor<2> {
        let _ = (layer, site);
        x + h
    }
}

/// The base model: no adapter.
pub struct NoAdapter;

impl LayerHooks for NoAdapter {}

/// A frozen linear layer, named by its HF module path (`model.layers.0.self_attn.q_proj`).
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
        let y = self.matmul(x);
        match &self.bias {
            Some(bias) => y + bias.clone().unsqueeze_dim(0),
            None => y,
        }
    }

    /// `x·W` without the bias.
    pub fn matmul(&self, x: Tensor<2>) -> Tensor<2> {
        x.matmul(self.weight_in_out())
    }

    pub fn bias(&self) -> Option<&Tensor<1>> {
        self.bias.as_ref()
    }

    pub fn has_bias(&self) -> bool {
        self.bias.is_some()
    }

    /// The weight as `[in, out]` (a transposed view for `nn.Linear`, no copy).
    pub fn weight_in_out(&self) -> Tensor<2> {
        match self.layout {
            WeightLayout::OutIn => self.weight.clone().transpose(),
            WeightLayout::InOut => self.weight.clone(),
        }
    }

    /// The weight as `[out, in]`, the convention of LoRA's `B A` product.
    pub fn weight_out_in(&self) -> Tensor<2> {
        match self.layout {
            WeightLayout::OutIn => self.weight.clone(),
            WeightLayout::InOut => self.weight.clone().transpose(),
        }
    }
}

/// Declares linear layers in a [`WeightSpec`] and later builds them with consecutive slots.
#[derive(Default)]
pub struct LinearTable {
    pub layers: Vec<Linear>,
}

impl LinearTable {
    pub fn declare(spec: &mut WeightSpec, path: &str, in_f: usize, out_f: usize, layout: WeightLayout, bias: bool) {
        let shape = match layout {
            WeightLayout::OutIn => [out_f, in_f],
            WeightLayout::InOut => [in_f, out_f],
        };
        spec.add(format!("{path}.weight"), &shape);
        if bias {
            spec.add(format!("{path}.bias"), &[out_f]);
        }
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

/// Llama's RMSNorm: `x / sqrt(mean(x²) + eps) · weight`.
pub struct RmsNorm {
    weight: Tensor<1>,
    eps: f64,
}

impl RmsNorm {
    pub fn declare(spec: &mut WeightSpec, path: &str, dim: usize) {
        spec.add(format!("{path}.weight"), &[dim]);
    }

    pub fn build(weights: &mut Weights, path: &str, eps: f64) -> Self {
        RmsNorm { weight: weights.take(&format!("{path}.weight")), eps }
    }

    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let inv_rms = (x.clone().square().mean_dim(1) + self.eps).sqrt().recip();
        x * inv_rms * self.weight.clone().unsqueeze_dim(0)
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
pub struct Rope {
    cos: Tensor<4>,
    sin: Tensor<4>,
}

impl Rope {
    /// Tables for positions `start .. start + len`, shaped `[1, 1, len, head_dim]`.
    pub fn new(config: &RopeConfig, head_dim: usize, start: usize, len: usize, device: &Device) -> Self {
        let inv_freq = inverse_frequencies(config, head_dim);
        let half = head_dim / 2;
        let mut cos = Vec::with_capacity(len * head_dim);
        let mut sin = Vec::with_capacity(len * head_dim);
        for pos in start..start + len {
            for i in 0..head_dim {
                let angle = pos as f32 * inv_freq[i % half];
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        let table = |v| Tensor::from_data(TensorData::new(v, [1, 1, len, head_dim]), device);
        Rope { cos: table(cos), sin: table(sin) }
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

/// Keys and values of earlier positions, per layer, for incremental decoding.
#[derive(Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
    len: usize,
}

impl KvCache {
    /// Number of positions already cached.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends this step's keys/values for `layer` and returns the full history.
    fn extend(&mut self, layer: usize, k: Tensor<4>, v: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        if self.layers.len() <= layer {
            self.layers.resize(layer + 1, None);
        }
        let (k, v) = match self.layers[layer].take() {
            Some((pk, pv)) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)),
            None => (k, v),
        };
        self.layers[layer] = Some((k.clone(), v.clone()));
        (k, v)
    }

    /// Marks `added` new positions as cached once every layer has extended.
    fn advance(&mut self, added: usize) {
        self.len += added;
    }
}

/// Per-forward attention context: the additive mask and the cache to extend.
pub struct AttentionContext<'a> {
    /// `[batch, 1, q_len, k_len]`: 0 where a query may attend, f32::MIN elsewhere; `None` when
    /// every query may see every earlier key (single-token decoding without padding).
    pub bias: Option<Tensor<4>>,
    pub cache: Option<&'a mut KvCache>,
    pub batch: usize,
    pub q_len: usize,
}

impl<'a> AttentionContext<'a> {
    /// Causal mask combined with a key padding mask (`key_mask[b * k_len + j]` = 1 for a real
    /// token), for queries at positions `past .. past + q_len`. Matches transformers' eager mask.
    pub fn new(
        batch: usize,
        q_len: usize,
        key_mask: Option<&[u8]>,
        cache: Option<&'a mut KvCache>,
        device: &Device,
    ) -> Self {
        let past = cache.as_ref().map_or(0, |c| c.len());
        let k_len = past + q_len;
        if let Some(mask) = key_mask {
            assert_eq!(mask.len(), batch * k_len, "key mask must cover the cached and new positions");
        }
        let all_visible = q_len == 1 && key_mask.is_none_or(|m| m.iter().all(|&x| x != 0));
        let bias = (!all_visible).then(|| {
            let mut data = Vec::with_capacity(batch * q_len * k_len);
            for b in 0..batch {
                for i in 0..q_len {
                    for j in 0..k_len {
                        let padded = key_mask.is_some_and(|m| m[b * k_len + j] == 0);
                        data.push(if j > past + i || padded { f32::MIN } else { 0.0 });
                    }
                }
            }
            Tensor::from_data(TensorData::new(data, [batch, 1, q_len, k_len]), device)
        });
        AttentionContext { bias, cache, batch, q_len }
    }

    /// Position of the first query (the number of cached positions).
    pub fn past_len(&self) -> usize {
        self.cache.as_ref().map_or(0, |c| c.len())
    }

    /// Scaled dot-product attention over `q [b, heads, q_len, d]` and new `k`, `v`
    /// `[b, kv_heads, q_len, d]` (grouped-query: each kv head serves `heads / kv_heads` queries).
    /// Returns `[b·q_len, heads·d]`.
    pub fn attend(&mut self, layer: usize, q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, scale: f64) -> Tensor<2> {
        let (k, v) = match self.cache.as_deref_mut() {
            Some(cache) => cache.extend(layer, k, v),
            None => (k, v),
        };
        let [b, heads, q_len, d] = q.dims();
        let kv_heads = k.dims()[1];
        let (k, v) = (repeat_kv(k, heads / kv_heads), repeat_kv(v, heads / kv_heads));
        let mut scores = q.matmul(k.swap_dims(2, 3)) * scale;
        if let Some(bias) = &self.bias {
            scores = scores + bias.clone();
        }
        let probs = activation::softmax(scores, 3);
        probs.matmul(v).swap_dims(1, 2).reshape([b * q_len, heads * d])
    }

    /// Records the new positions in the cache; call once after the last layer.
    pub fn finish(self) {
        if let Some(cache) = self.cache {
            cache.advance(self.q_len);
        }
    }
}

/// `[b, kv, len, d] -> [b, kv·groups, len, d]`, each kv head repeated `groups` times in a row
/// (transformers' `repeat_kv`).
fn repeat_kv(x: Tensor<4>, groups: usize) -> Tensor<4> {
    if groups == 1 {
        return x;
    }
    let [b, kv, len, d] = x.dims();
    x.unsqueeze_dim::<5>(2).expand([b, kv, groups, len, d]).reshape([b, kv * groups, len, d])
}

/// `[tokens, heads·d] -> [batch, heads, len, d]`.
pub fn split_heads(x: Tensor<2>, batch: usize, len: usize, heads: usize) -> Tensor<4> {
    let [_, width] = x.dims();
    x.reshape([batch, len, heads, width / heads]).swap_dims(1, 2)
}

/// An embedding table `[rows, dim]` looked up by id.
pub struct Embedding {
    pub weight: Tensor<2>,
}

impl Embedding {
    pub fn forward(&self, ids: burn::tensor::Tensor<1, burn::tensor::Int>) -> Tensor<2> {
        self.weight.clone().select(0, ids)
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
