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

use std::collections::BTreeMap;

use burn::tensor::{Device, Int, Tensor, TensorData};
use regex::Regex;

use crate::err;
use crate::error::Result;
use crate::model::{Architecture, CausalLm, LayerHooks, Linear, LinearShape, ModelShape, WeightLayout};
use crate::peft::svd;
use crate::readback;
use crate::rng::{Rng, Stream};

/// How `A` and `B` start.
#[derive(Clone, Debug, PartialEq)]
pub enum LoraInit {
    /// PEFT's default (`init_lora_weights=True`): A kaiming-uniform, B zero.
    Default,
    /// `init_lora_weights="gaussian"`: A ~ N(0, 1/r²), B zero.
    Gaussian,
    /// `init_lora_weights="pissa"` (exact SVD) or `"pissa_niter_K"` (K subspace iterations).
    Pissa { niter: Option<usize> },
}

impl LoraInit {
    /// The `init_lora_weights` value PEFT writes for this init.
    pub fn peft_value(&self) -> serde_json::Value {
        match self {
            LoraInit::Default => true.into(),
            LoraInit::Gaussian => "gaussian".into(),
            LoraInit::Pissa { niter: None } => "pissa".into(),
            LoraInit::Pissa { niter: Some(k) } => format!("pissa_niter_{k}").into(),
        }
    }

    pub fn from_peft_value(value: &serde_json::Value) -> Result<Self> {
        match value {
            serde_json::Value::Bool(true) | serde_json::Value::Null => Ok(LoraInit::Default),
            serde_json::Value::String(s) if s == "gaussian" => Ok(LoraInit::Gaussian),
            serde_json::Value::String(s) if s == "pissa" => Ok(LoraInit::Pissa { niter: None }),
            serde_json::Value::String(s) if s.starts_with("pissa_niter_") => s["pissa_niter_".len()..]
                .parse()
                .map(|k| LoraInit::Pissa { niter: Some(k) })
                .map_err(|_| err!(InvalidAdapter, "init_lora_weights \"{s}\" is not pissa_niter_<number>")),
            other => Err(err!(
                InvalidAdapter,
                "init_lora_weights {other} is not supported (true, \"gaussian\", \"pissa\", \"pissa_niter_K\")"
            )),
        }
    }
}

/// PEFT's default LoRA targets per architecture (`TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING`),
/// used when a run names none.
pub fn default_targets(architecture: Architecture) -> Vec<String> {
    let names: &[&str] = match architecture {
        Architecture::Llama | Architecture::Qwen2 | Architecture::Qwen3 | Architecture::Gemma3 => &["q_proj", "v_proj"],
        Architecture::Gpt2 => &["c_attn"],
    };
    names.iter().map(|s| s.to_string()).collect()
}

/// Which layers get adapters, how large, and how they start (PEFT's `LoraConfig`). The default
/// targets no layer: set `target_modules` (PEFT's choice per architecture: [`default_targets`]).
#[derive(Clone, Debug, PartialEq)]
pub struct LoraConfig {
    pub r: usize,
    pub alpha: f64,
    pub dropout: f64,
    /// Module-name suffixes (`q_proj`), `"all-linear"`, or one regex (full match) when
    /// `target_regex` is set.
    pub target_modules: Vec<String>,
    pub target_regex: bool,
    pub use_rslora: bool,
    /// Per-module rank / alpha overrides: pattern → value, matched like PEFT's `rank_pattern`.
    pub rank_pattern: BTreeMap<String, usize>,
    pub alpha_pattern: BTreeMap<String, f64>,
    pub init: LoraInit,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig {
            r: 8,
            alpha: 16.0,
            dropout: 0.0,
            target_modules: Vec::new(),
            target_regex: false,
            use_rslora: false,
            rank_pattern: BTreeMap::new(),
            alpha_pattern: BTreeMap::new(),
            init: LoraInit::Default,
        }
    }
}

impl LoraConfig {
    /// Whether PEFT would adapt the module at `path` (`check_target_module_exists`).
    pub fn targets(&self, path: &str) -> Result<bool> {
        module_matches(path, &self.target_modules, self.target_regex)
    }

    /// Rank and alpha of the module at `path`, after `rank_pattern` / `alpha_pattern`.
    fn rank_alpha(&self, path: &str) -> Result<(usize, f64)> {
        let r = match pattern_value(&self.rank_pattern, path)? {
            Some(r) => *r,
            None => self.r,
        };
        let alpha = match pattern_value(&self.alpha_pattern, path)? {
            Some(a) => *a,
            None => self.alpha,
        };
        Ok((r, alpha))
    }

    /// The config of the plain LoRA that PEFT converts a PiSSA adapter to (`save_pretrained` with
    /// `path_initial_model_for_weight_conversion`): every rank doubles ([`LoraModule::plain_factors`])
    /// and every scale stays, so alpha doubles too (× √2 with rsLoRA, whose scale is alpha / √r).
    pub fn pissa_as_lora(&self) -> Result<LoraConfig> {
        if self.use_rslora && (!self.rank_pattern.is_empty() || !self.alpha_pattern.is_empty()) {
            return Err(err!(
                InvalidOptions,
                "PEFT cannot convert a PiSSA adapter that uses rsLoRA with rank/alpha patterns"
            ));
        }
        let alpha_factor = if self.use_rslora { std::f64::consts::SQRT_2 } else { 2.0 };
        Ok(LoraConfig {
            r: 2 * self.r,
            alpha: alpha_factor * self.alpha,
            rank_pattern: self.rank_pattern.iter().map(|(k, r)| (k.clone(), 2 * r)).collect(),
            alpha_pattern: self.alpha_pattern.iter().map(|(k, a)| (k.clone(), alpha_factor * a)).collect(),
            init: LoraInit::Default,
            ..self.clone()
        })
    }

    fn scale(&self, r: usize, alpha: f64) -> f64 {
        if self.use_rslora { alpha / (r as f64).sqrt() } else { alpha / r as f64 }
    }

    /// The layers this config adapts, with their rank, alpha and scale.
    pub fn resolve<'m>(&self, model: &'m ModelShape) -> Result<Vec<(&'m LinearShape, usize, f64)>> {
        if self.r == 0 {
            return Err(err!(InvalidOptions, "LoRA rank r must be at least 1"));
        }
        let mut chosen = Vec::new();
        for linear in &model.linears {
            if self.targets(&linear.path)? {
                let (r, alpha) = self.rank_alpha(&linear.path)?;
                if r == 0 {
                    return Err(err!(InvalidOptions, "rank_pattern gives {} rank 0", linear.path));
                }
                chosen.push((linear, r, self.scale(r, alpha)));
            }
        }
        if chosen.is_empty() {
            return Err(err!(
                InvalidOptions,
                "target modules {:?} match no layer of this {} model; its linear layers are {:?}",
                self.target_modules,
                model.config.architecture.name(),
                model.linear_names()
            ));
        }
        Ok(chosen)
    }
}

/// PEFT's `get_pattern_key`: the first pattern that matches the end of the module path.
fn pattern_value<'a, T>(patterns: &'a BTreeMap<String, T>, path: &str) -> Result<Option<&'a T>> {
    for (pattern, value) in patterns {
        let re = Regex::new(&format!(r"^(?:.*\.)?(?:{pattern})$"))
            .map_err(|e| err!(InvalidOptions, "pattern \"{pattern}\" is not a valid regex: {e}"))?;
        if re.is_match(path) {
            return Ok(Some(value));
        }
    }
    Ok(None)
}

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
        LoraAdapter { config, modules, seed, by_slot, train_dropout: None }
    }

    /// Turns dropout on with masks drawn from `seed` (training), or off with `None`.
    pub fn set_training(&mut self, seed: Option<u64>) {
        self.train_dropout = seed.filter(|_| self.config.dropout > 0.0).map(|seed| (1.0 - self.config.dropout, seed));
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

/// Checks that every entry of a `target_modules` name list matches at least one linear layer of
/// `model` (suffix match, as PEFT matches), so that a method that can only change linear layers
/// names the entry it cannot apply to instead of silently skipping it.
pub(crate) fn every_target_is_linear(method: &str, targets: &[String], model: &ModelShape) -> Result<()> {
    for target in targets {
        if target == "all-linear" {
            continue;
        }
        if !model.linears.iter().any(|l| suffix_matches(&l.path, std::slice::from_ref(target))) {
            return Err(err!(
                InvalidOptions,
                "target_modules entry \"{target}\" names no linear layer of this {} model; {method} can only adapt \
                 linear layers, which here are {:?}",
                model.config.architecture.name(),
                model.linear_names()
            ));
        }
    }
    Ok(())
}

/// PEFT's `check_target_module_exists`: `path` equals or ends with `.<name>` for one of `names`,
/// or (with `regex`) fully matches the single pattern `names[0]`; `"all-linear"` matches any path.
pub(crate) fn module_matches(path: &str, names: &[String], regex: bool) -> Result<bool> {
    if regex {
        let pattern = names.first().map(String::as_str).unwrap_or_default();
        let re = Regex::new(&format!("^(?:{pattern})$"))
            .map_err(|e| err!(InvalidOptions, "target_modules regex \"{pattern}\" is invalid: {e}"))?;
        return Ok(re.is_match(path));
    }
    Ok(suffix_matches(path, names))
}

fn suffix_matches(path: &str, names: &[String]) -> bool {
    names.iter().any(|t| t == "all-linear" || path == t || path.ends_with(&format!(".{t}")))
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
    fn linear(&self, layer: &Linear, x: Tensor<2>) -> Tensor<2> {
        let Some(m) = self.by_slot.get(layer.slot).copied().flatten().map(|i| &self.modules[i]) else {
            return layer.forward_base(x);
        };
        let dropped = self.dropped(layer.slot, &x);
        if m.magnitude.is_none() && m.pissa_initial.is_none() && dropped.is_none() {
            let limit = crate::device::info_of(&x.device()).shader_loop_limit;
            if crate::kernels::lora_fits(x.dims()[0], layer.in_features.max(layer.out_features), limit) {
                return layer.forward_lora(x, m.a.clone(), m.b.clone(), m.scale);
            }
        }
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

    fn config(targets: &[&str]) -> LoraConfig {
        LoraConfig { target_modules: targets.iter().map(|s| s.to_string()).collect(), ..LoraConfig::default() }
    }

    #[test]
    fn suffix_matching_follows_peft() {
        let c = config(&["c_proj", "c_attn"]);
        assert!(c.targets("transformer.h.0.attn.c_proj").unwrap());
        assert!(c.targets("transformer.h.1.mlp.c_proj").unwrap());
        assert!(!c.targets("transformer.h.0.mlp.c_fc").unwrap());
        assert!(!config(&["proj"]).targets("model.layers.0.self_attn.q_proj").unwrap());
    }

    #[test]
    fn regex_target_is_a_full_match() {
        let c = LoraConfig { target_regex: true, ..config(&[r".*\.layers\.0\..*(q|v)_proj"]) };
        assert!(c.targets("model.layers.0.self_attn.q_proj").unwrap());
        assert!(!c.targets("model.layers.1.self_attn.q_proj").unwrap());
    }

    #[test]
    fn rank_pattern_overrides_by_suffix() {
        let mut c = config(&["q_proj", "v_proj"]);
        c.rank_pattern.insert("v_proj".into(), 4);
        c.alpha_pattern.insert(r"layers\.1\.self_attn\.q_proj".into(), 2.0);
        assert_eq!(c.rank_alpha("model.layers.0.self_attn.v_proj").unwrap(), (4, 16.0));
        assert_eq!(c.rank_alpha("model.layers.1.self_attn.q_proj").unwrap(), (8, 2.0));
        assert_eq!(c.rank_alpha("model.layers.0.self_attn.q_proj").unwrap(), (8, 16.0));
    }

    #[test]
    fn rslora_scale() {
        let c = LoraConfig { use_rslora: true, ..LoraConfig::default() };
        assert!((c.scale(16, 16.0) - 4.0).abs() < 1e-12);
        assert!((LoraConfig::default().scale(8, 16.0) - 2.0).abs() < 1e-12);
    }
}
