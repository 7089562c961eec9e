//! Adapter files exactly as PEFT writes them: `adapter_model.safetensors` (keys
//! `base_model.model.<module>.lora_A.weight`, `.lora_magnitude_vector` (DoRA, no `.weight`),
//! `.ia3_l`, or `prompt_embeddings`; F32, metadata
//! `{"format": "pt"}`), `adapter_config.json` (sorted keys, 2-space indent) and a `README.md`
//! model card. PEFT's `PeftModel.from_pretrained` loads them unchanged. A randomized-PiSSA adapter
//! also records its seed in the safetensors metadata ([`SEED_METADATA`]), which PEFT ignores.

use std::collections::{BTreeMap, HashMap};

use burn::tensor::{Tensor, TensorData};
use serde_json::{Value, json};

use crate::err;
use crate::error::Result;
use crate::model::weights::{HostTensor, encode_safetensors, read_host_tensors};
use crate::model::{CausalLm, WeightLayout};
use crate::peft::adapterhub::looks_pickled;
use crate::peft::lora::{LoraAdapter, LoraConfig, LoraInit, LoraModule, every_target_is_linear, pissa_initial};
use crate::peft::peft_key;
use crate::peft::prompt::{PromptAdapter, PromptConfig, PromptInit};
use crate::peft::{Adapter, ia3};
use crate::readback;

pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
pub const README_FILE: &str = "README.md";
/// PEFT's weights saved with `safe_serialization=False`: a pickle, which webtune never reads.
pub const PICKLE_FILE: &str = "adapter_model.bin";
/// The `adapter_model.safetensors` metadata key that holds the seed of a `pissa_niter_K` adapter's
/// randomized SVD, so that reading it back rebuilds the residual the adapter was trained against.
pub const SEED_METADATA: &str = "webtune.seed";

/// The three files of a saved adapter.
pub struct AdapterFiles {
    pub config_json: String,
    pub weights: Vec<u8>,
    pub readme: String,
}

/// What the model card says about the run (all optional).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelCard {
    pub steps: Option<usize>,
    pub final_loss: Option<f64>,
    pub eval_loss: Option<f64>,
    pub dataset: Option<String>,
}

/// Serialises an adapter. `base_model` becomes `base_model_name_or_path`. A PiSSA adapter is
/// written as PEFT's `path_initial_model_for_weight_conversion` does when `pissa_as_lora`: a plain
/// rank-2r LoRA that applies to the original base model; otherwise as trained (its A/B apply to
/// the residual base, which PEFT recomputes from the base weights when it loads the adapter).
pub async fn export(
    adapter: &Adapter,
    base_model: &str,
    pissa_as_lora: bool,
    card: &ModelCard,
) -> Result<AdapterFiles> {
    let mut metadata: HashMap<String, String> = [("format".to_owned(), "pt".to_owned())].into();
    let (config, tensors) = match adapter {
        Adapter::Lora(lora) => {
            let convert = pissa_as_lora && lora.is_pissa();
            if !convert && matches!(lora.config.init, LoraInit::Pissa { niter: Some(_) }) {
                metadata.insert(SEED_METADATA.to_owned(), lora.seed.to_string());
            }
            lora_files(lora, base_model, convert).await?
        }
        Adapter::Prompt(prompt) => prompt_files(prompt, base_model).await?,
        Adapter::Ia3(adapter) => {
            let mut tensors = BTreeMap::new();
            for m in &adapter.modules {
                tensors.insert(peft_key(&m.path, "ia3_l"), host(m.vector.clone()).await?);
            }
            (ia3::peft_config(adapter, base_model), tensors)
        }
        Adapter::Bottleneck(_) => {
            return Err(err!(
                InvalidOptions,
                "PEFT has no bottleneck adapters; export them in AdapterHub's format (adapter.safetensors)"
            ));
        }
    };
    Ok(AdapterFiles {
        config_json: pretty_sorted(&config),
        weights: encode_safetensors(&tensors, Some(metadata)),
        readme: model_card(&config, card),
    })
}

pub(crate) async fn host(tensor: Tensor<2>) -> Result<HostTensor> {
    let shape = tensor.dims().to_vec();
    Ok(HostTensor { shape, data: readback::floats(tensor).await? })
}

async fn lora_files(
    lora: &LoraAdapter,
    base_model: &str,
    convert_pissa: bool,
) -> Result<(Value, BTreeMap<String, HostTensor>)> {
    if convert_pissa && lora.is_dora() {
        return Err(err!(
            InvalidOptions,
            "a PiSSA DoRA adapter cannot be converted to a plain LoRA (its row norms depend on the residual base); \
             export it as trained"
        ));
    }
    let converted;
    let c = if convert_pissa {
        converted = lora.config.pissa_as_lora()?;
        &converted
    } else {
        &lora.config
    };
    let mut tensors = BTreeMap::new();
    for m in &lora.modules {
        let (a, b) = if convert_pissa { m.plain_factors() } else { (m.a.clone(), m.b.clone()) };
        tensors.insert(peft_key(&m.path, "lora_A.weight"), host(a).await?);
        tensors.insert(peft_key(&m.path, "lora_B.weight"), host(b).await?);
        if let Some(magnitude) = &m.magnitude {
            let mut values = host(magnitude.clone()).await?;
            values.shape = vec![values.data.len()];
            tensors.insert(peft_key(&m.path, "lora_magnitude_vector"), values);
        }
    }
    let fan_in_fan_out = lora.modules.first().is_some_and(|m| m.layout == WeightLayout::InOut);
    let target_modules: Value = if c.target_regex { json!(c.target_modules[0]) } else { json!(c.target_modules) };
    let config = json!({
        "alpha_pattern": c.alpha_pattern.iter().map(|(k, v)| (k.clone(), number(*v))).collect::<serde_json::Map<_, _>>(),
        "base_model_name_or_path": base_model,
        "bias": "none",
        "fan_in_fan_out": fan_in_fan_out,
        "inference_mode": true,
        "init_lora_weights": c.init.peft_value(),
        "layers_pattern": null,
        "layers_to_transform": null,
        "lora_alpha": number(c.alpha),
        "lora_dropout": c.dropout,
        "modules_to_save": null,
        "peft_type": "LORA",
        "r": c.r,
        "rank_pattern": c.rank_pattern,
        "revision": null,
        "target_modules": target_modules,
        "task_type": "CAUSAL_LM",
        "use_dora": lora.is_dora(),
        "use_rslora": c.use_rslora,
    });
    Ok((config, tensors))
}

async fn prompt_files(prompt: &PromptAdapter, base_model: &str) -> Result<(Value, BTreeMap<String, HostTensor>)> {
    let [n, dim] = prompt.embeddings.dims();
    let text = match &prompt.config.init {
        PromptInit::Text(t) => json!(t),
        _ => Value::Null,
    };
    let tokenizer = if text.is_null() { Value::Null } else { json!(base_model) };
    let config = json!({
        "base_model_name_or_path": base_model,
        "inference_mode": true,
        "num_attention_heads": prompt.model_heads,
        "num_layers": prompt.model_layers,
        "num_transformer_submodules": 1,
        "num_virtual_tokens": n,
        "peft_type": "PROMPT_TUNING",
        "prompt_tuning_init": prompt.config.init.peft_name(),
        "prompt_tuning_init_text": text,
        "revision": null,
        "task_type": "CAUSAL_LM",
        "token_dim": dim,
        "tokenizer_kwargs": null,
        "tokenizer_name_or_path": tokenizer,
    });
    let tensors = [("prompt_embeddings".to_owned(), host(prompt.embeddings.clone()).await?)].into();
    Ok((config, tensors))
}

/// Integers without a trailing `.0` (PEFT writes `"lora_alpha": 16`).
pub(crate) fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 1e15 { json!(x as i64) } else { json!(x) }
}

/// JSON with sorted keys and a 2-space indent, as PEFT writes `adapter_config.json`.
pub fn pretty_sorted(value: &Value) -> String {
    fn sort(v: &Value) -> Value {
        match v {
            Value::Object(o) => {
                let sorted: BTreeMap<&String, Value> = o.iter().map(|(k, v)| (k, sort(v))).collect();
                Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_string_pretty(&sort(value)).expect("JSON values serialise")
}

fn model_card(config: &Value, card: &ModelCard) -> String {
    let base = config["base_model_name_or_path"].as_str().unwrap_or_default();
    let method = match config["peft_type"].as_str() {
        Some("LORA") => format!(
            "{} (r={}, alpha={}, targets {})",
            if config["use_dora"] == true { "DoRA" } else { "LoRA" },
            config["r"],
            config["lora_alpha"],
            config["target_modules"]
        ),
        Some("IA3") => {
            format!("IA3 (targets {}, feed-forward {})", config["target_modules"], config["feedforward_modules"])
        }
        _ => format!(
            "prompt tuning ({} virtual tokens, init {})",
            config["num_virtual_tokens"], config["prompt_tuning_init"]
        ),
    };
    let mut facts = Vec::new();
    if let Some(d) = &card.dataset {
        facts.push(format!("- Dataset: `{d}`"));
    }
    if let Some(s) = card.steps {
        facts.push(format!("- Steps: {s}"));
    }
    if let Some(l) = card.final_loss {
        facts.push(format!("- Final training loss: {l:.4}"));
    }
    if let Some(l) = card.eval_loss {
        facts.push(format!("- Eval loss: {l:.4} (perplexity {:.2})", l.exp()));
    }
    format!(
        "---\nbase_model: {base}\nlibrary_name: peft\ntags:\n- webtune\n- {peft}\n---\n\n# Adapter for {base}\n\n\
         Trained privately with [webtune](https://github.com/webtune/webtune) using {method}.\n\n{facts}\n\n\
         ## Use with PEFT\n\n```python\nfrom transformers import AutoModelForCausalLM\nfrom peft import PeftModel\n\n\
         base = AutoModelForCausalLM.from_pretrained(\"{base}\")\nmodel = PeftModel.from_pretrained(base, \"path/to/this/folder\")\n```\n",
        peft = config["peft_type"].as_str().unwrap_or_default().to_lowercase(),
        facts = facts.join("\n"),
    )
}

/// Reads a PEFT adapter (`adapter_config.json` + `adapter_model.safetensors`) for `lm`. A raw
/// PiSSA adapter gets its residual recomputed from the base weights, as PEFT does when loading
/// (randomized PiSSA with the seed in [`SEED_METADATA`]; 0 when the file has none).
pub async fn import(config_json: &str, weights: &[u8], lm: &CausalLm) -> Result<Adapter> {
    let config: Value =
        serde_json::from_str(config_json).map_err(|e| err!(InvalidAdapter, "{CONFIG_FILE} is not valid JSON: {e}"))?;
    let tensors = read_host_tensors(WEIGHTS_FILE, weights).map_err(|e| {
        if looks_pickled(weights) {
            pickle_error(&format!("{WEIGHTS_FILE} (a torch.save file under the safetensors name)"))
        } else {
            err!(InvalidAdapter, "{}", e.message)
        }
    })?;
    match config.get("peft_type").and_then(Value::as_str) {
        Some("LORA") => import_lora(&config, tensors, init_seed(weights)?, lm).await.map(Adapter::Lora),
        Some("PROMPT_TUNING") => import_prompt(&config, tensors, lm).map(Adapter::Prompt),
        Some("IA3") => ia3::from_peft(&config, tensors, lm).map(Adapter::Ia3),
        Some(other) => Err(err!(
            InvalidAdapter,
            "{CONFIG_FILE}: peft_type \"{other}\" is not supported (LORA, IA3, PROMPT_TUNING)"
        )),
        None => Err(err!(InvalidAdapter, "{CONFIG_FILE} has no \"peft_type\"")),
    }
}

/// The error for PEFT weights saved as a pickle; `file` names it.
pub(crate) fn pickle_error(file: &str) -> crate::error::Error {
    err!(
        InvalidAdapter,
        "{file} is a pickled PyTorch file, which webtune does not read (loading a pickle can run code). Re-save it \
         as safetensors with PEFT: `PeftModel.from_pretrained(base, \"DIR\").save_pretrained(\"OUT\")`, then use OUT"
    )
}

/// The seed recorded under [`SEED_METADATA`], or 0.
fn init_seed(weights: &[u8]) -> Result<u64> {
    let (_, header) = safetensors::SafeTensors::read_metadata(weights)
        .map_err(|e| err!(InvalidAdapter, "{WEIGHTS_FILE} is unreadable: {e}"))?;
    match header.metadata().as_ref().and_then(|m| m.get(SEED_METADATA)) {
        Some(text) => text.parse().map_err(|_| {
            err!(InvalidAdapter, "{WEIGHTS_FILE}: metadata \"{SEED_METADATA}\" = \"{text}\" is not a seed")
        }),
        None => Ok(0),
    }
}

pub(crate) fn field<'a>(config: &'a Value, key: &str) -> Option<&'a Value> {
    config.get(key).filter(|v| !v.is_null())
}

fn usize_field(config: &Value, key: &str) -> Result<Option<usize>> {
    field(config, key)
        .map(|v| {
            v.as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| err!(InvalidAdapter, "{CONFIG_FILE}: \"{key}\" must be a whole number"))
        })
        .transpose()
}

async fn import_lora(
    config: &Value,
    mut tensors: BTreeMap<String, HostTensor>,
    seed: u64,
    lm: &CausalLm,
) -> Result<LoraAdapter> {
    let use_dora = field(config, "use_dora").and_then(Value::as_bool) == Some(true);
    if let Some(bias) = field(config, "bias").and_then(Value::as_str).filter(|b| *b != "none") {
        return Err(err!(InvalidAdapter, "{CONFIG_FILE}: bias \"{bias}\" is not supported (only \"none\")"));
    }
    if field(config, "layers_to_transform").is_some() {
        return Err(err!(InvalidAdapter, "{CONFIG_FILE}: layers_to_transform is not supported"));
    }
    if field(config, "modules_to_save").and_then(Value::as_array).is_some_and(|m| !m.is_empty()) {
        return Err(err!(InvalidAdapter, "{CONFIG_FILE}: modules_to_save is not supported"));
    }
    let (target_modules, target_regex) = match field(config, "target_modules") {
        Some(Value::String(s)) => (vec![s.clone()], s != "all-linear"),
        Some(Value::Array(items)) => (items.iter().filter_map(Value::as_str).map(str::to_owned).collect(), false),
        _ => return Err(err!(InvalidAdapter, "{CONFIG_FILE}: \"target_modules\" must be a list of names or a regex")),
    };
    let patterns = |key: &str| -> BTreeMap<String, f64> {
        field(config, key)
            .and_then(Value::as_object)
            .map(|o| o.iter().filter_map(|(k, v)| Some((k.clone(), v.as_f64()?))).collect())
            .unwrap_or_default()
    };
    let lora_config = LoraConfig {
        r: usize_field(config, "r")?.unwrap_or(8),
        alpha: field(config, "lora_alpha").and_then(Value::as_f64).unwrap_or(8.0),
        dropout: field(config, "lora_dropout").and_then(Value::as_f64).unwrap_or(0.0),
        target_modules,
        target_regex,
        use_rslora: field(config, "use_rslora").and_then(Value::as_bool).unwrap_or(false),
        rank_pattern: patterns("rank_pattern").into_iter().map(|(k, v)| (k, v as usize)).collect(),
        alpha_pattern: patterns("alpha_pattern"),
        init: LoraInit::from_peft_value(field(config, "init_lora_weights").unwrap_or(&Value::Bool(true)))?,
    };
    let device = lm.device();
    let mut modules = Vec::new();
    let in_file = |e: crate::error::Error| {
        err!(InvalidAdapter, "{CONFIG_FILE}: {} (was the adapter trained for another model?)", e.message)
    };
    let resolved = lora_config.resolve(lm.shape()).map_err(in_file)?;
    if use_dora && !lora_config.target_regex {
        every_target_is_linear("DoRA", &lora_config.target_modules, lm.shape()).map_err(in_file)?;
    }
    for (shape, r, scale) in resolved {
        let linear = &lm.linears()[shape.slot];
        let mut take = |name: &str, shape: [usize; 2], saved: &[usize]| -> Result<Tensor<2>> {
            let key = peft_key(&linear.path, name);
            // Some saved files keep PEFT's adapter name in the key: `lora_A.default.weight`.
            let alt = match name.strip_suffix(".weight") {
                Some(stem) => peft_key(&linear.path, &format!("{stem}.default.weight")),
                None => peft_key(&linear.path, &format!("{name}.default.weight")),
            };
            let t = tensors.remove(&key).or_else(|| tensors.remove(&alt)).ok_or_else(|| {
                err!(
                    InvalidAdapter,
                    "{WEIGHTS_FILE} has no tensor \"{key}\" (the adapter does not match this model or its config)"
                )
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
        let (fan_in, fan_out) = (linear.in_features, linear.out_features);
        let a = take("lora_A.weight", [r, fan_in], &[r, fan_in])?;
        let b = take("lora_B.weight", [fan_out, r], &[fan_out, r])?;
        let magnitude = if use_dora { Some(take("lora_magnitude_vector", [1, fan_out], &[fan_out])?) } else { None };
        let pissa_initial = match &lora_config.init {
            LoraInit::Pissa { niter } => Some(pissa_initial(linear, r, scale, *niter, seed, device).await?),
            _ => None,
        };
        modules.push(LoraModule { magnitude, ..LoraModule::new(linear, scale, a, b, pissa_initial) });
    }
    if let Some(extra) = tensors.keys().next() {
        return Err(err!(
            InvalidAdapter,
            "{WEIGHTS_FILE}: tensor \"{extra}\" belongs to no layer this config targets in this model"
        ));
    }
    Ok(LoraAdapter::from_modules(lm, lora_config, seed, modules))
}

fn import_prompt(config: &Value, mut tensors: BTreeMap<String, HostTensor>, lm: &CausalLm) -> Result<PromptAdapter> {
    let n = usize_field(config, "num_virtual_tokens")?
        .ok_or_else(|| err!(InvalidAdapter, "{CONFIG_FILE} has no \"num_virtual_tokens\""))?;
    if usize_field(config, "num_transformer_submodules")?.unwrap_or(1) != 1 {
        return Err(err!(
            InvalidAdapter,
            "{CONFIG_FILE}: only num_transformer_submodules = 1 (decoder-only models) is supported"
        ));
    }
    let hidden = lm.config.hidden_size;
    let t = tensors
        .remove("prompt_embeddings")
        .ok_or_else(|| err!(InvalidAdapter, "{WEIGHTS_FILE} has no tensor \"prompt_embeddings\""))?;
    if t.shape != [n, hidden] {
        return Err(err!(
            InvalidAdapter,
            "{WEIGHTS_FILE}: \"prompt_embeddings\" has shape {:?}, expected [{n}, {hidden}] for this model",
            t.shape
        ));
    }
    let init = match field(config, "prompt_tuning_init").and_then(Value::as_str) {
        Some("TEXT") => PromptInit::Text(
            field(config, "prompt_tuning_init_text").and_then(Value::as_str).unwrap_or_default().to_owned(),
        ),
        Some("SAMPLE_VOCAB") => PromptInit::SampleVocab,
        _ => PromptInit::Random,
    };
    let embeddings = Tensor::from_data(TensorData::new(t.data, [n, hidden]), lm.device());
    Ok(PromptAdapter::from_embeddings(lm, PromptConfig { num_virtual_tokens: n, init }, embeddings))
}
