//! Bottleneck adapters as AdapterHub's `adapters` 1.3 defines them (`methods/modeling.py`
//! `Adapter`, `methods/bottleneck.py`): a small network `f(z) = act(z W_downᵀ + b_down) W_upᵀ + b_up`
//! (times `scaling`), `W_down [b, H]`, `W_up [H, b]`, `b = max(1, floor(H / reduction_factor))`,
//! placed at the residual add after a sub-block of every decoder layer.
//!
//! With `x` the stream entering the sub-block and `h` its output, AdapterHub computes (pre-LN
//! models, where the "original layer norm" is `None`):
//! `z = original_ln_before ? h + x : h`; `r = residual_before_ln ? h : z`; `out = f(z) + r`;
//! `x_next = original_ln_after ? out + x : out`. So `seq_bn` (Pfeiffer: MLP only,
//! `original_ln_before`) gives `x + h + f(x + h)` and `double_seq_bn` (Houlsby: attention and MLP)
//! gives `x + h + f(h)`, each summed as `(f(z) + h) + x`.

use std::collections::BTreeMap;

use burn::tensor::{Tensor, TensorData, activation};

use crate::err;
use crate::error::Result;
use crate::model::{CausalLm, LayerHooks, Linear, ModelShape, SubBlock};
use crate::rng::{Rng, Stream};

/// `reduction_factor`: one value, or per layer (`{"0": 8, "default": 16}`).
#[derive(Clone, Debug, PartialEq)]
pub enum ReductionFactor {
    Uniform(f64),
    PerLayer { layers: BTreeMap<usize, f64>, default: Option<f64> },
}

impl ReductionFactor {
    /// The bottleneck width for a layer: `int(hidden // factor)`, at least 1, as AdapterHub sizes it.
    pub fn bottleneck(&self, layer: usize, hidden: usize) -> Result<usize> {
        let factor = match self {
            ReductionFactor::Uniform(f) => *f,
            ReductionFactor::PerLayer { layers, default } => {
                layers.get(&layer).or(default.as_ref()).copied().ok_or_else(|| {
                    err!(
                        InvalidOptions,
                        "reduction_factor gives no value for layer {layer} and no \"default\" (write e.g. \
                         {{\"{layer}\": 16, \"default\": 16}})"
                    )
                })?
            }
        };
        if !(factor > 0.0 && factor.is_finite()) {
            return Err(err!(InvalidOptions, "reduction_factor must be a positive number, got {factor}"));
        }
        Ok(((hidden as f64 / factor).floor() as usize).max(1))
    }
}

/// The non-linearity between the projections (`non_linearity`, names as transformers'
/// `get_activation` takes them after AdapterHub lower-cases them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonLinearity {
    Relu,
    /// `swish` / `silu`: `x · sigmoid(x)`.
    Silu,
    /// `gelu`: the exact erf form.
    Gelu,
    /// `gelu_new` / `gelu_pytorch_tanh`: the tanh approximation.
    GeluTanh,
    Tanh,
    /// `leakyrelu`: slope 0.01.
    LeakyRelu,
    Sigmoid,
}

impl NonLinearity {
    pub const NAMES: &'static str = "relu, swish, silu, gelu, gelu_new, gelu_pytorch_tanh, tanh, leakyrelu, sigmoid";

    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name.to_lowercase().as_str() {
            "relu" => NonLinearity::Relu,
            "swish" | "silu" => NonLinearity::Silu,
            "gelu" => NonLinearity::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" => NonLinearity::GeluTanh,
            "tanh" => NonLinearity::Tanh,
            "leakyrelu" | "leaky_relu" => NonLinearity::LeakyRelu,
            "sigmoid" => NonLinearity::Sigmoid,
            _ => {
                return Err(err!(
                    InvalidOptions,
                    "non_linearity \"{name}\" is not supported; use one of {}",
                    Self::NAMES
                ));
            }
        })
    }

    fn apply(self, x: Tensor<2>) -> Tensor<2> {
        match self {
            NonLinearity::Relu => activation::relu(x),
            NonLinearity::Silu => activation::silu(x),
            NonLinearity::Gelu => activation::gelu(x),
            NonLinearity::GeluTanh => activation::gelu_approximate(x),
            NonLinearity::Tanh => activation::tanh(x),
            NonLinearity::LeakyRelu => activation::leaky_relu(x, 0.01),
            NonLinearity::Sigmoid => activation::sigmoid(x),
        }
    }
}

/// How the projections start (`init_weights`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BottleneckInit {
    /// `bert`: both weights N(0, 0.02), biases 0 (a near-identity, not exact).
    Bert,
    /// `mam_adapter`: down weight U(±1/√H) (kaiming-uniform), everything else 0 (exact identity).
    MamAdapter,
    /// `houlsby`: both weights N(0, 0.01) truncated to ±0.02, biases 0.
    Houlsby,
}

impl BottleneckInit {
    pub fn name(self) -> &'static str {
        match self {
            BottleneckInit::Bert => "bert",
            BottleneckInit::MamAdapter => "mam_adapter",
            BottleneckInit::Houlsby => "houlsby",
        }
    }

    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "bert" => Ok(BottleneckInit::Bert),
            "mam_adapter" => Ok(BottleneckInit::MamAdapter),
            "houlsby" => Ok(BottleneckInit::Houlsby),
            other => {
                Err(err!(InvalidOptions, "init_weights \"{other}\" is not supported; use bert, mam_adapter or houlsby"))
            }
        }
    }
}

/// A bottleneck adapter configuration (AdapterHub's `BnConfig` fields that change the computation).
#[derive(Clone, Debug, PartialEq)]
pub struct BottleneckConfig {
    /// The adapter name, part of every weight key and of `adapter_config.json`'s `"name"`.
    pub name: String,
    /// An adapter after the attention sub-block.
    pub mh_adapter: bool,
    /// An adapter after the MLP sub-block.
    pub output_adapter: bool,
    pub reduction_factor: ReductionFactor,
    /// As written in the config (`"swish"` stays `"swish"`); see [`NonLinearity`].
    pub non_linearity: String,
    pub original_ln_before: bool,
    pub original_ln_after: bool,
    pub residual_before_ln: bool,
    pub init_weights: BottleneckInit,
    /// When set, every module starts from this seed (identical modules, as AdapterHub re-seeds).
    pub init_weights_seed: Option<u64>,
    /// Layers without adapters.
    pub leave_out: Vec<usize>,
    /// The factor on `f`'s output.
    pub scaling: f64,
}

impl BottleneckConfig {
    /// `SeqBnConfig` (Pfeiffer et al. 2020): one adapter after the MLP, relu, `x + h + f(x + h)`.
    pub fn seq_bn(name: &str, reduction_factor: ReductionFactor) -> Self {
        BottleneckConfig {
            name: name.to_owned(),
            mh_adapter: false,
            output_adapter: true,
            reduction_factor,
            non_linearity: "relu".into(),
            original_ln_before: true,
            original_ln_after: true,
            residual_before_ln: true,
            init_weights: BottleneckInit::Bert,
            init_weights_seed: None,
            leave_out: Vec::new(),
            scaling: 1.0,
        }
    }

    /// `DoubleSeqBnConfig` (Houlsby et al. 2019): adapters after attention and after the MLP,
    /// swish, `x + h + f(h)`.
    pub fn double_seq_bn(name: &str, reduction_factor: ReductionFactor) -> Self {
        BottleneckConfig {
            mh_adapter: true,
            non_linearity: "swish".into(),
            original_ln_before: false,
            ..Self::seq_bn(name, reduction_factor)
        }
    }

    /// Checks the name, the non-linearity and that some adapter is placed at all.
    pub fn validate(&self) -> Result<NonLinearity> {
        let valid_name =
            !self.name.is_empty() && self.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid_name {
            return Err(err!(
                InvalidOptions,
                "adapter name \"{}\" must be non-empty letters, digits, '_' or '-' (it is part of every weight key)",
                self.name
            ));
        }
        if !self.mh_adapter && !self.output_adapter {
            return Err(err!(
                InvalidOptions,
                "mh_adapter and output_adapter are both false: no adapter would be placed"
            ));
        }
        if !self.scaling.is_finite() {
            return Err(err!(InvalidOptions, "scaling must be a number, got {}", self.scaling));
        }
        NonLinearity::parse(&self.non_linearity)
    }
}

/// One adapter module at one residual add.
#[derive(Clone)]
pub struct BottleneckModule {
    pub layer: usize,
    pub site: SubBlock,
    /// Key prefix (`model.layers.0.output_adapters.adapters.seq_bn`).
    pub key: String,
    /// `[b, H]`
    pub down: Tensor<2>,
    /// `[1, b]` (saved as `[b]`)
    pub down_bias: Tensor<2>,
    /// `[H, b]`
    pub up: Tensor<2>,
    /// `[1, H]` (saved as `[H]`)
    pub up_bias: Tensor<2>,
}

impl BottleneckModule {
    pub fn bottleneck(&self) -> usize {
        self.down.dims()[0]
    }
}

/// Bottleneck adapters for a model, in (layer, attention before MLP) order.
#[derive(Clone)]
pub struct BottleneckAdapter {
    pub config: BottleneckConfig,
    pub modules: Vec<BottleneckModule>,
    /// The base model's `model_type` and hidden size, which `adapter_config.json` records.
    pub model_type: String,
    pub hidden_size: usize,
    act: NonLinearity,
    /// Module index per (layer, site).
    by_site: Vec<[Option<usize>; 2]>,
}

/// Where a module sits: `attention_adapters` after attention, `output_adapters` after the MLP.
pub fn site_name(site: SubBlock) -> &'static str {
    match site {
        SubBlock::Attention => "attention_adapters",
        SubBlock::Mlp => "output_adapters",
    }
}

fn site_index(site: SubBlock) -> usize {
    match site {
        SubBlock::Attention => 0,
        SubBlock::Mlp => 1,
    }
}

/// Each decoder layer's module path (`model.layers.3`, `transformer.h.3`), taken from the model's
/// linear layers: the path up to the first numeric component.
pub fn decoder_layer_paths(model: &ModelShape) -> Result<Vec<String>> {
    let mut paths: Vec<Option<String>> = vec![None; model.config.num_layers];
    for linear in &model.linears {
        let parts: Vec<&str> = linear.path.split('.').collect();
        let Some(at) = parts.iter().position(|p| p.parse::<usize>().is_ok()) else { continue };
        let index: usize = parts[at].parse().expect("checked numeric");
        if let Some(slot) = paths.get_mut(index) {
            slot.get_or_insert_with(|| parts[..=at].join("."));
        }
    }
    paths
        .into_iter()
        .enumerate()
        .map(|(i, p)| p.ok_or_else(|| err!(InvalidConfig, "decoder layer {i} has no linear layers to locate it")))
        .collect()
}

/// The (layer, site, key prefix) of every module `config` places in `lm`, in parameter order.
pub fn placements(model: &ModelShape, config: &BottleneckConfig) -> Result<Vec<(usize, SubBlock, String)>> {
    let layers = decoder_layer_paths(model)?;
    let mut out = Vec::new();
    for (layer, path) in layers.iter().enumerate() {
        if config.leave_out.contains(&layer) {
            continue;
        }
        let sites = [(config.mh_adapter, SubBlock::Attention), (config.output_adapter, SubBlock::Mlp)];
        for (_, site) in sites.into_iter().filter(|(on, _)| *on) {
            out.push((layer, site, format!("{path}.{}.adapters.{}", site_name(site), config.name)));
        }
    }
    Ok(out)
}

impl BottleneckAdapter {
    /// New adapters initialised as `config.init_weights` says, seeded for reproducibility.
    pub fn init(lm: &CausalLm, config: BottleneckConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let hidden = lm.config.hidden_size;
        let device = lm.device();
        let mut modules = Vec::new();
        for (index, (layer, site, key)) in placements(lm.shape(), &config)?.into_iter().enumerate() {
            let b = config.reduction_factor.bottleneck(layer, hidden)?;
            let mut rng = match config.init_weights_seed {
                Some(s) => Rng::stream(s, Stream::BottleneckInit { module: 0 }),
                None => Rng::stream(seed, Stream::BottleneckInit { module: index }),
            };
            let mut matrix = |rows: usize, cols: usize, sample: &mut dyn FnMut(&mut Rng) -> f64| {
                let values: Vec<f32> = (0..rows * cols).map(|_| sample(&mut rng) as f32).collect();
                Tensor::<2>::from_data(TensorData::new(values, [rows, cols]), device)
            };
            let bert = &mut |r: &mut Rng| 0.02 * r.normal();
            let houlsby = &mut |r: &mut Rng| truncated_normal(r, 0.01, 0.02);
            let bound = 1.0 / (hidden as f64).sqrt();
            let (down, up) = match config.init_weights {
                BottleneckInit::Bert => (matrix(b, hidden, bert), matrix(hidden, b, bert)),
                BottleneckInit::Houlsby => (matrix(b, hidden, houlsby), matrix(hidden, b, houlsby)),
                BottleneckInit::MamAdapter => {
                    (matrix(b, hidden, &mut |r: &mut Rng| r.uniform(-bound, bound)), Tensor::zeros([hidden, b], device))
                }
            };
            modules.push(BottleneckModule {
                layer,
                site,
                key,
                down,
                down_bias: Tensor::zeros([1, b], device),
                up,
                up_bias: Tensor::zeros([1, hidden], device),
            });
        }
        Self::from_modules(lm, config, modules)
    }

    pub fn from_modules(lm: &CausalLm, config: BottleneckConfig, modules: Vec<BottleneckModule>) -> Result<Self> {
        let act = config.validate()?;
        let mut by_site = vec![[None; 2]; lm.config.num_layers];
        for (i, m) in modules.iter().enumerate() {
            by_site[m.layer][site_index(m.site)] = Some(i);
        }
        Ok(BottleneckAdapter {
            config,
            modules,
            model_type: lm.config.architecture.name().to_owned(),
            hidden_size: lm.config.hidden_size,
            act,
            by_site,
        })
    }

    /// The trainable tensors with their AdapterHub keys, per module: down weight, down bias, up
    /// weight, up bias (the order of `model.named_parameters()`).
    pub fn params(&self) -> Vec<(String, Tensor<2>)> {
        self.modules
            .iter()
            .flat_map(|m| {
                [
                    (format!("{}.adapter_down.0.weight", m.key), m.down.clone()),
                    (format!("{}.adapter_down.0.bias", m.key), m.down_bias.clone()),
                    (format!("{}.adapter_up.weight", m.key), m.up.clone()),
                    (format!("{}.adapter_up.bias", m.key), m.up_bias.clone()),
                ]
            })
            .collect()
    }

    /// The same adapter with new tensors, in [`Self::params`] order.
    pub fn with_params(&self, values: &mut impl Iterator<Item = Tensor<2>>) -> Self {
        let mut next = || values.next().expect("one value per trainable tensor");
        let mut out = self.clone();
        for m in &mut out.modules {
            m.down = next();
            m.down_bias = next();
            m.up = next();
            m.up_bias = next();
        }
        out
    }
}

/// N(0, std²) restricted to `[-limit, limit]` (rejection sampling; torch's `trunc_normal_`
/// draws from the same distribution by inverting the CDF).
fn truncated_normal(rng: &mut Rng, std: f64, limit: f64) -> f64 {
    loop {
        let v = std * rng.normal();
        if v.abs() <= limit {
            return v;
        }
    }
}

impl LayerHooks for BottleneckAdapter {
    fn changes(&self, _: &Linear) -> bool {
        false
    }

    fn residual(&self, layer: usize, site: SubBlock, x: Tensor<2>, h: Tensor<2>) -> Tensor<2> {
        let Some(m) = self.by_site.get(layer).and_then(|s| s[site_index(site)]).map(|i| &self.modules[i]) else {
            return x + h;
        };
        let c = &self.config;
        let z = if c.original_ln_before { h.clone() + x.clone() } else { h.clone() };
        let r = if c.residual_before_ln { h } else { z.clone() };
        let down = self.act.apply(z.matmul(m.down.clone().transpose()) + m.down_bias.clone());
        let mut up = down.matmul(m.up.clone().transpose()) + m.up_bias.clone();
        if c.scaling != 1.0 {
            up = up * c.scaling;
        }
        let out = up + r;
        if c.original_ln_after { out + x } else { out }
    }
}
