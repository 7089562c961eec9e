//! (IA)³ as PEFT defines it (`tuners/ia3/layer.py`): a learned vector per targeted linear layer.
//! An attention-side layer scales its output, bias included: `y = (x W + b) ⊙ l`, `l [out, 1]`.
//! A feed-forward layer (`feedforward_modules`) scales its input: `y = (x ⊙ l) W + b`, `l [1, in]`.
//! The vectors start at 1 (`init_ia3_weights=True`), so the adapter starts as the identity. GPT-2's
//! Conv1D layers take the same vectors (in/out of the layer, whatever the storage layout).

use std::collections::BTreeMap;

use burn::tensor::{Tensor, TensorData};
use serde_json::{Value, json};

use crate::err;
use crate::error::Result;
use crate::model::weights::HostTensor;
use crate::model::{CausalLm, LayerHooks, Linear, LinearShape, ModelShape, WeightLayout};
use crate::peft::files::{CONFIG_FILE, WEIGHTS_FILE, field};
use crate::peft::lora::{every_target_is_linear, module_matches};

/// Which layers get vectors, and which of them scale their input (PEFT's `IA3Config`).
#[derive(Clone, Debug, PartialEq)]
pub struct Ia3Config {
    /// Module-name suffixes, or one regex (full match) when `target_regex` is set.
    pub target_modules: Vec<String>,
    pub target_regex: bool,
    /// Names whose path ends with one of them (PEFT compares with a plain `endswith`), or one regex
    /// (full match) when `feedforward_regex` is set.
    pub feedforward_modules: Vec<String>,
    pub feedforward_regex: bool,
}

impl Ia3Config {
    /// PEFT's defaults for a `model_type` (`TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING` and
    /// `..._FEEDFORWARD_MODULES_MAPPING` in `peft/utils/constants.py`, PEFT 0.21).
    pub fn for_model_type(model_type: &str) -> Result<Self> {
        let (targets, feedforward): (&[&str], &[&str]) = match model_type {
            "llama" => (&["k_proj", "v_proj", "down_proj"], &["down_proj"]),
            "qwen2" | "qwen3" | "gemma3" | "gemma3_text" => (&["q_proj", "v_proj", "down_proj"], &["down_proj"]),
            "gpt2" => (&["c_attn", "mlp.c_proj"], &["mlp.c_proj"]),
            other => {
                return Err(err!(
                    InvalidOptions,
                    "PEFT has no default IA3 target_modules for model_type \"{other}\"; name the target and \
                     feed-forward modules"
                ));
            }
        };
        let owned = |names: &[&str]| names.iter().map(|s| s.to_string()).collect();
        Ok(Ia3Config {
            target_modules: owned(targets),
            target_regex: false,
            feedforward_modules: owned(feedforward),
            feedforward_regex: false,
        })
    }

    /// Whether the module at `path` scales its input (PEFT `_check_target_module_feedforward`).
    fn is_feedforward(&self, path: &str) -> Result<bool> {
        if self.feedforward_regex {
            return module_matches(path, &self.feedforward_modules, true);
        }
        Ok(self.feedforward_modules.iter().any(|f| path.ends_with(f.as_str())))
    }

    /// The layers this config adapts, each with whether it is a feed-forward layer. PEFT's checks:
    /// `feedforward_modules` must be a subset of `target_modules` (as name lists); here also every
    /// listed target must name a linear layer, since only those can take a vector.
    pub fn resolve<'m>(&self, model: &'m ModelShape) -> Result<Vec<(&'m LinearShape, bool)>> {
        let outside = self.feedforward_modules.iter().find(|f| !self.target_modules.contains(f));
        if !self.target_regex
            && !self.feedforward_regex
            && let Some(f) = outside
        {
            return Err(err!(
                InvalidOptions,
                "IA3 feedforward_modules entry \"{f}\" is not in target_modules {:?} (PEFT requires a subset)",
                self.target_modules
            ));
        }
        if !self.target_regex {
            every_target_is_linear("IA3", &self.target_modules, model)?;
        }
        let mut chosen = Vec::new();
        for linear in &model.linears {
            if module_matches(&linear.path, &self.target_modules, self.target_regex)? {
                chosen.push((linear, self.is_feedforward(&linear.path)?));
            }
        }
        if chosen.is_empty() {
            return Err(err!(
                InvalidOptions,
                "IA3 target_modules {:?} match no layer of this {} model; its linear layers are {:?}",
                self.target_modules,
                model.config.architecture.name(),
                model.linear_names()
            ));
        }
        Ok(chosen)
    }
}

/// The vector of one linear layer.
#[derive(Clone)]
pub struct Ia3Module {
    /// HF module path of the adapted layer.
    pub path: String,
    pub slot: usize,
    pub layout: WeightLayout,
    /// Scales the input (`[1, in]`) rather than the output (`[out, 1]`).
    pub feedforward: bool,
    /// `ia3_l`, in PEFT's shape.
    pub vector: Tensor<2>,
}

/// IA3 vectors for a model, one [`Ia3Module`] per adapted layer in layer order.
#[derive(Clone)]
pub struct Ia3Adapter {
    pub config: Ia3Config,
    pub modules: Vec<Ia3Module>,
    by_slot: Vec<Option<usize>>,
}

impl Ia3Adapter {
    /// Vectors of ones on the layers `config` selects (PEFT's `init_ia3_weights=True`).
    pub fn init(lm: &CausalLm, config: Ia3Config) -> Result<Self> {
        let modules = config
            .resolve(lm.shape())?
            .into_iter()
            .map(|(linear, feedforward)| {
                let shape = if feedforward { [1, linear.in_features] } else { [linear.out_features, 1] };
                Ia3Module {
                    path: linear.path.clone(),
                    slot: linear.slot,
                    layout: linear.layout,
                    feedforward,
                    vector: Tensor::ones(shape, lm.device()),
                }
            })
            .collect();
        Ok(Self::from_modules(lm, config, modules))
    }

    pub fn from_modules(lm: &CausalLm, config: Ia3Config, modules: Vec<Ia3Module>) -> Self {
        let mut by_slot = vec![None; lm.linears().len()];
        for (i, m) in modules.iter().enumerate() {
            by_slot[m.slot] = Some(i);
        }
        Ia3Adapter { config, modules, by_slot }
    }
}

impl Ia3Module {
    /// The vector as a row `[1, features]`, to broadcast over tokens.
    pub(crate) fn row(&self) -> Tensor<2> {
        let n = self.vector.dims().iter().product();
        self.vector.clone().reshape([1, n])
    }
}

impl LayerHooks for Ia3Adapter {
    fn changes(&self, layer: &Linear) -> bool {
        self.by_slot.get(layer.slot).is_some_and(Option::is_some)
    }

    fn linear(&self, layer: &Linear, x: Tensor<2>) -> Tensor<2> {
        match self.by_slot.get(layer.slot).copied().flatten().map(|i| &self.modules[i]) {
            None => layer.forward_base(x),
            Some(m) if m.feedforward => layer.forward_base(x * m.row()),
            Some(m) => layer.forward_base(x) * m.row(),
        }
    }
}

/// `adapter_config.json` as PEFT 0.21 writes it for IA3 (list fields are sets there: their order
/// is not meaningful).
pub(crate) fn peft_config(adapter: &Ia3Adapter, base_model: &str) -> Value {
    let c = &adapter.config;
    let names = |list: &[String], regex: bool| if regex { json!(list[0]) } else { json!(list) };
    json!({
        "auto_mapping": null,
        "base_model_name_or_path": base_model,
        "exclude_modules": null,
        "fan_in_fan_out": adapter.modules.first().is_some_and(|m| m.layout == WeightLayout::InOut),
        "feedforward_modules": names(&c.feedforward_modules, c.feedforward_regex),
        "inference_mode": true,
        "init_ia3_weights": true,
        "modules_to_save": null,
        "peft_type": "IA3",
        "revision": null,
        "target_modules": names(&c.target_modules, c.target_regex),
        "task_type": "CAUSAL_LM",
    })
}

/// The `target_modules` / `feedforward_modules` of a PEFT config: a name list, or one regex.
fn module_list(config: &Value, key: &str) -> Result<Option<(Vec<String>, bool)>> {
    match field(config, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some((vec![s.clone()], true))),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .map(|names| Some((names, false)))
            .ok_or_else(|| err!(InvalidAdapter, "{CONFIG_FILE}: \"{key}\" must be a list of names or a regex")),
        Some(_) => Err(err!(InvalidAdapter, "{CONFIG_FILE}: \"{key}\" must be a list of names or a regex")),
    }
}

/// Reads a PEFT IA3 adapter: missing module lists take PEFT's defaults for the model.
pub(crate) fn from_peft(
    config: &Value,
    mut tensors: BTreeMap<String, HostTensor>,
    lm: &CausalLm,
) -> Result<Ia3Adapter> {
    if field(config, "modules_to_save").and_then(Value::as_array).is_some_and(|m| !m.is_empty()) {
        return Err(err!(InvalidAdapter, "{CONFIG_FILE}: modules_to_save is not supported"));
    }
    let in_file = |e: crate::error::Error| {
        err!(InvalidAdapter, "{CONFIG_FILE}: {} (was the adapter trained for another model?)", e.message)
    };
    let defaults = || Ia3Config::for_model_type(lm.config.architecture.name()).map_err(in_file);
    let (target_modules, target_regex) = match module_list(config, "target_modules")? {
        Some(list) => list,
        None => (defaults()?.target_modules, false),
    };
    let (feedforward_modules, feedforward_regex) = match module_list(config, "feedforward_modules")? {
        Some(list) => list,
        None => (defaults()?.feedforward_modules, false),
    };
    let ia3_config = Ia3Config { target_modules, target_regex, feedforward_modules, feedforward_regex };
    let mut modules = Vec::new();
    for (linear, feedforward) in ia3_config.resolve(lm.shape()).map_err(in_file)? {
        let key = crate::peft::peft_key(&linear.path, "ia3_l");
        let t = tensors.remove(&key).or_else(|| tensors.remove(&format!("{key}.default"))).ok_or_else(|| {
            err!(
                InvalidAdapter,
                "{WEIGHTS_FILE} has no tensor \"{key}\" (the adapter does not match this model or its config)"
            )
        })?;
        let shape = if feedforward { [1, linear.in_features] } else { [linear.out_features, 1] };
        if t.shape != shape {
            return Err(err!(
                InvalidAdapter,
                "{WEIGHTS_FILE}: tensor \"{key}\" has shape {:?}, expected {shape:?} for this model ({})",
                t.shape,
                if feedforward { "a feed-forward module scales its input" } else { "it scales the output" }
            ));
        }
        modules.push(Ia3Module {
            path: linear.path.clone(),
            slot: linear.slot,
            layout: linear.layout,
            feedforward,
            vector: Tensor::from_data(TensorData::new(t.data, shape), lm.device()),
        });
    }
    if let Some(extra) = tensors.keys().next() {
        return Err(err!(
            InvalidAdapter,
            "{WEIGHTS_FILE}: tensor \"{extra}\" belongs to no layer this config targets in this model"
        ));
    }
    Ok(Ia3Adapter::from_modules(lm, ia3_config, modules))
}
