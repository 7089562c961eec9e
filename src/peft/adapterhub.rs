//! Bottleneck adapter files exactly as AdapterHub's `model.save_adapter(dir, name, with_head=False,
//! use_safetensors=True)` writes them (`adapters` 1.3.0), so that `model.load_adapter(dir,
//! use_safetensors=True)` loads them unchanged:
//! - `adapter.safetensors`: F32, no `__metadata__`, keys = full state-dict names
//!   `<layer path>.<attention|output>_adapters.adapters.<name>.<adapter_down.0|adapter_up>.<weight|bias>`
//!   (no `base_model.model.` prefix, unlike PEFT).
//! - `adapter_config.json`: `json.dump(indent=2, sort_keys=True)` without a trailing newline:
//!   `{"config": <the full BnConfig dict>, "hidden_size", "model_class", "model_name",
//!   "model_type", "name", "version": "adapters.1.3.0"}`.
//!
//! Reading: AdapterHub builds `BnConfig.from_dict(config)`, so a missing field takes BnConfig's
//! default (not SeqBn's). A file without `version` comes from adapter-transformers, whose loader
//! renames `non_linearity` `gelu` to `gelu_new` and `gelu_orig` to `gelu`; so does this one. Fields
//! that change the computation in ways webtune does not implement (layer norms inside the adapter,
//! gating, parallel adapters, PHM layers, dropout) are refused by name.

use std::collections::BTreeMap;

use burn::tensor::{Tensor, TensorData};
use serde_json::{Map, Value, json};

use crate::err;
use crate::error::Result;
use crate::model::weights::{HostTensor, encode_safetensors, read_host_tensors};
use crate::model::{CausalLm, FileSource};
use crate::peft::bottleneck::{
    BottleneckAdapter, BottleneckConfig, BottleneckInit, BottleneckModule, NonLinearity, ReductionFactor, placements,
};
use crate::peft::files::{number, pretty_sorted};
use crate::readback;

pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter.safetensors";
/// What `save_adapter` writes without `use_safetensors=True`: a pickle, which webtune never reads.
pub const PICKLE_FILE: &str = "pytorch_adapter.bin";
pub const VERSION: &str = "adapters.1.3.0";

/// The two files of a saved AdapterHub adapter.
pub struct AdapterHubFiles {
    pub config_json: String,
    pub weights: Vec<u8>,
}

/// The `model_class` AdapterHub records (the transformers class of the base model).
fn model_class(model_type: &str) -> String {
    match model_type {
        "llama" => "LlamaForCausalLM".into(),
        "qwen2" => "Qwen2ForCausalLM".into(),
        "qwen3" => "Qwen3ForCausalLM".into(),
        "gemma3" | "gemma3_text" => "Gemma3ForCausalLM".into(),
        "gpt2" => "GPT2LMHeadModel".into(),
        other => format!("{other}ForCausalLM"),
    }
}

fn reduction_factor_json(rf: &ReductionFactor) -> Value {
    match rf {
        ReductionFactor::Uniform(f) => number(*f),
        ReductionFactor::PerLayer { layers, default } => {
            let mut map: Map<String, Value> = layers.iter().map(|(l, f)| (l.to_string(), number(*f))).collect();
            if let Some(d) = default {
                map.insert("default".into(), number(*d));
            }
            Value::Object(map)
        }
    }
}

/// The full `BnConfig` dict `save_adapter` writes; fields webtune does not model have BnConfig's
/// defaults (the values import accepts).
fn config_dict(c: &BottleneckConfig) -> Value {
    json!({
        "adapter_residual_before_ln": false,
        "cross_adapter": false,
        "dropout": 0.0,
        "factorized_phm_W": true,
        "factorized_phm_rule": false,
        "hypercomplex_nonlinearity": "glorot-uniform",
        "init_weights": c.init_weights.name(),
        "init_weights_seed": c.init_weights_seed,
        "inv_adapter": null,
        "inv_adapter_reduction_factor": null,
        "is_parallel": false,
        "learn_phm": true,
        "leave_out": c.leave_out,
        "ln_after": false,
        "ln_before": false,
        "mh_adapter": c.mh_adapter,
        "non_linearity": c.non_linearity,
        "original_ln_after": c.original_ln_after,
        "original_ln_before": c.original_ln_before,
        "output_adapter": c.output_adapter,
        "phm_bias": true,
        "phm_c_init": "normal",
        "phm_dim": 4,
        "phm_init_range": 0.0001,
        "phm_layer": false,
        "phm_rank": 1,
        "reduction_factor": reduction_factor_json(&c.reduction_factor),
        "residual_before_ln": c.residual_before_ln,
        "scaling": c.scaling,
        "shared_W_phm": false,
        "shared_phm_rule": true,
        "stochastic_depth": 0.0,
        "use_gating": false,
    })
}

/// Serialises a bottleneck adapter; `model_name` becomes `"model_name"` (the base model's path).
pub async fn export(adapter: &BottleneckAdapter, model_name: &str) -> Result<AdapterHubFiles> {
    let config = json!({
        "config": config_dict(&adapter.config),
        "hidden_size": adapter.hidden_size,
        "model_class": model_class(&adapter.model_type),
        "model_name": model_name,
        "model_type": adapter.model_type,
        "name": adapter.config.name,
        "version": VERSION,
    });
    let mut tensors = BTreeMap::new();
    for (key, tensor) in adapter.params() {
        let dims = tensor.dims();
        // Biases are held as rows [1, n] and saved as vectors [n].
        let shape = if key.ends_with(".bias") { vec![dims[1]] } else { dims.to_vec() };
        tensors.insert(key, HostTensor { shape, data: readback::floats(tensor).await? });
    }
    Ok(AdapterHubFiles { config_json: pretty_sorted(&config), weights: encode_safetensors(&tensors, None) })
}

/// Reads an AdapterHub adapter folder (`adapter_config.json` + `adapter.safetensors`) for `lm`.
/// A folder holding only `pytorch_adapter.bin` is refused: it is a pickle.
pub fn read_folder(source: &dyn FileSource, lm: &CausalLm) -> Result<BottleneckAdapter> {
    if !source.exists(WEIGHTS_FILE) {
        if source.exists(PICKLE_FILE) {
            return Err(pickle_error(&format!("{}: {PICKLE_FILE}", source.describe())));
        }
        return Err(err!(FileMissing, "{}: {WEIGHTS_FILE} is missing", source.describe()));
    }
    import(&source.read_text(CONFIG_FILE)?, &source.read(WEIGHTS_FILE)?, lm)
}

/// The error for an AdapterHub adapter saved as a pickle; `file` names it.
fn pickle_error(file: &str) -> crate::error::Error {
    err!(
        InvalidAdapter,
        "{file} is a pickled PyTorch file, which webtune does not read (loading a pickle can run code). Re-save \
         it as safetensors with AdapterHub: `name = model.load_adapter(\"DIR\"); model.save_adapter(\"OUT\", name, \
         with_head=False, use_safetensors=True)`, then use OUT"
    )
}

/// Whether unreadable weights are a `torch.save` file (a zip archive, or a bare pickle stream).
pub fn looks_pickled(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04") || bytes.first() == Some(&0x80)
}

fn field<'a>(config: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    config.get(key).filter(|v| !v.is_null())
}

fn bool_field(config: &Map<String, Value>, key: &str, default: bool) -> Result<bool> {
    match field(config, key) {
        None => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        // AdapterHub allows residual_before_ln = "post_add", which equals true without a layer norm.
        Some(Value::String(s)) if key == "residual_before_ln" && s == "post_add" => Ok(true),
        Some(other) => Err(err!(InvalidAdapter, "{CONFIG_FILE}: config \"{key}\" must be true or false, got {other}")),
    }
}

fn parse_reduction_factor(value: &Value) -> Result<ReductionFactor> {
    let bad = || {
        err!(
            InvalidAdapter,
            "{CONFIG_FILE}: config \"reduction_factor\" must be a number or a mapping like {{\"0\": 8, \"default\": 16}}, \
             got {value}"
        )
    };
    match value {
        Value::Number(n) => Ok(ReductionFactor::Uniform(n.as_f64().ok_or_else(bad)?)),
        Value::Object(map) => {
            let mut layers = BTreeMap::new();
            let mut default = None;
            for (k, v) in map {
                let f = v.as_f64().ok_or_else(bad)?;
                if k == "default" {
                    default = Some(f);
                } else {
                    layers.insert(k.parse().map_err(|_| bad())?, f);
                }
            }
            Ok(ReductionFactor::PerLayer { layers, default })
        }
        _ => Err(bad()),
    }
}

/// Parses `adapter_config.json`'s `"config"` (BnConfig defaults for missing fields).
fn parse_config(file: &Value) -> Result<BottleneckConfig> {
    let config = file
        .get("config")
        .and_then(Value::as_object)
        .ok_or_else(|| err!(InvalidAdapter, "{CONFIG_FILE} has no \"config\" object (not an AdapterHub adapter)"))?;
    if let Some(arch) = field(config, "architecture").and_then(Value::as_str).filter(|a| *a != "bottleneck") {
        return Err(err!(
            InvalidAdapter,
            "{CONFIG_FILE}: AdapterHub architecture \"{arch}\" is not supported (only bottleneck adapters)"
        ));
    }
    for key in ["mh_adapter", "output_adapter", "reduction_factor", "non_linearity"] {
        if field(config, key).is_none() {
            return Err(err!(InvalidAdapter, "{CONFIG_FILE}: config has no \"{key}\", which AdapterHub requires"));
        }
    }
    // Options that would change the computation in ways not implemented here.
    let unsupported_true = ["ln_before", "ln_after", "use_gating", "is_parallel", "phm_layer", "cross_adapter"];
    for key in unsupported_true {
        if bool_field(config, key, false)? {
            return Err(err!(InvalidAdapter, "{CONFIG_FILE}: config \"{key}\": true is not supported by webtune"));
        }
    }
    for key in ["dropout", "stochastic_depth"] {
        let v = field(config, key).map(|v| v.as_f64().unwrap_or(f64::NAN)).unwrap_or(0.0);
        if v != 0.0 {
            return Err(err!(InvalidAdapter, "{CONFIG_FILE}: config \"{key}\" {v} is not supported (only 0)"));
        }
    }
    if field(config, "inv_adapter").is_some() {
        return Err(err!(
            InvalidAdapter,
            "{CONFIG_FILE}: invertible adapters (config \"inv_adapter\") are not supported"
        ));
    }
    let scaling = match field(config, "scaling") {
        None => 1.0,
        Some(v) => v.as_f64().ok_or_else(|| {
            err!(InvalidAdapter, "{CONFIG_FILE}: config \"scaling\" {v} is not supported (only a number)")
        })?,
    };
    let mut non_linearity = field(config, "non_linearity")
        .and_then(Value::as_str)
        .ok_or_else(|| err!(InvalidAdapter, "{CONFIG_FILE}: config \"non_linearity\" must be a string"))?
        .to_owned();
    if file.get("version").is_none() {
        // adapter-transformers files: the loader's `_rename_non_linearity` compatibility rule.
        non_linearity = match non_linearity.as_str() {
            "gelu" => "gelu_new".into(),
            "gelu_orig" => "gelu".into(),
            other => other.to_owned(),
        };
    }
    NonLinearity::parse(&non_linearity).map_err(|e| err!(InvalidAdapter, "{CONFIG_FILE}: config {}", e.message))?;
    let init_weights = match field(config, "init_weights").and_then(Value::as_str) {
        None => BottleneckInit::Bert,
        Some(name) => {
            BottleneckInit::parse(name).map_err(|e| err!(InvalidAdapter, "{CONFIG_FILE}: config {}", e.message))?
        }
    };
    let leave_out = match field(config, "leave_out") {
        None => Vec::new(),
        Some(v) => v
            .as_array()
            .and_then(|items| items.iter().map(|i| i.as_u64().map(|n| n as usize)).collect::<Option<Vec<_>>>())
            .ok_or_else(|| {
                err!(InvalidAdapter, "{CONFIG_FILE}: config \"leave_out\" must be a list of layer numbers")
            })?,
    };
    let name = file
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| err!(InvalidAdapter, "{CONFIG_FILE} has no adapter \"name\""))?;
    Ok(BottleneckConfig {
        name: name.to_owned(),
        mh_adapter: bool_field(config, "mh_adapter", false)?,
        output_adapter: bool_field(config, "output_adapter", false)?,
        reduction_factor: parse_reduction_factor(&config["reduction_factor"])?,
        non_linearity,
        original_ln_before: bool_field(config, "original_ln_before", false)?,
        original_ln_after: bool_field(config, "original_ln_after", true)?,
        residual_before_ln: bool_field(config, "residual_before_ln", true)?,
        init_weights,
        init_weights_seed: field(config, "init_weights_seed").and_then(Value::as_u64),
        leave_out,
        scaling,
    })
}

/// Reads an AdapterHub bottleneck adapter for `lm`. The config's model type and hidden size, and
/// every tensor's key and shape, must fit the model; every tensor must be used.
pub fn import(config_json: &str, weights: &[u8], lm: &CausalLm) -> Result<BottleneckAdapter> {
    let file: Value =
        serde_json::from_str(config_json).map_err(|e| err!(InvalidAdapter, "{CONFIG_FILE} is not valid JSON: {e}"))?;
    let config = parse_config(&file)?;
    let hidden = lm.config.hidden_size;
    let model_type = lm.config.architecture.name();
    if let Some(h) = file.get("hidden_size").and_then(Value::as_u64).filter(|&h| h as usize != hidden) {
        return Err(err!(
            InvalidAdapter,
            "{CONFIG_FILE}: \"hidden_size\" is {h} but this model's hidden size is {hidden}: the adapter was trained \
             for another model"
        ));
    }
    if let Some(t) = file.get("model_type").and_then(Value::as_str).filter(|t| *t != model_type) {
        return Err(err!(
            InvalidAdapter,
            "{CONFIG_FILE}: \"model_type\" is \"{t}\" but this model is {model_type}: the adapter was trained for \
             another model"
        ));
    }
    let mut tensors = read_host_tensors(WEIGHTS_FILE, weights).map_err(|e| {
        if looks_pickled(weights) {
            pickle_error(&format!("{WEIGHTS_FILE} (a torch.save file under the safetensors name)"))
        } else {
            err!(InvalidAdapter, "{}", e.message)
        }
    })?;
    let device = lm.device();
    let mut modules = Vec::new();
    let mut take = |key: String, shape: [usize; 2], saved: &[usize]| -> Result<Tensor<2>> {
        let t = tensors.remove(&key).ok_or_else(|| {
            err!(InvalidAdapter, "{WEIGHTS_FILE} has no tensor \"{key}\" (the adapter does not match this model)")
        })?;
        if t.shape != saved {
            return Err(err!(
                InvalidAdapter,
                "{WEIGHTS_FILE}: tensor \"{key}\" has shape {:?}, expected {saved:?} for this model",
                t.shape
            ));
        }
        Ok(Tensor::from_data(TensorData::new(t.data, shape), device))
    };
    for (layer, site, key) in placements(lm.shape(), &config).map_err(|e| err!(InvalidAdapter, "{}", e.message))? {
        let b = config
            .reduction_factor
            .bottleneck(layer, hidden)
            .map_err(|e| err!(InvalidAdapter, "{CONFIG_FILE}: {}", e.message))?;
        modules.push(BottleneckModule {
            layer,
            site,
            down: take(format!("{key}.adapter_down.0.weight"), [b, hidden], &[b, hidden])?,
            down_bias: take(format!("{key}.adapter_down.0.bias"), [1, b], &[b])?,
            up: take(format!("{key}.adapter_up.weight"), [hidden, b], &[hidden, b])?,
            up_bias: take(format!("{key}.adapter_up.bias"), [1, hidden], &[hidden])?,
            key,
        });
    }
    if let Some(extra) = tensors.keys().next() {
        return Err(err!(
            InvalidAdapter,
            "{WEIGHTS_FILE}: tensor \"{extra}\" belongs to no adapter this config places in this {model_type} model \
             ({} layers)",
            lm.config.num_layers
        ));
    }
    BottleneckAdapter::from_modules(lm, config, modules)
        .map_err(|e| err!(InvalidAdapter, "{CONFIG_FILE}: {}", e.message))
}
