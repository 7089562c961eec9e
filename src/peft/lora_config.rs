//! LoRA's options as PEFT's `LoraConfig` names them, and which modules they select (PEFT's
//! `check_target_module_exists`, `rank_pattern`, `alpha_pattern`, rsLoRA's scale).

use std::collections::BTreeMap;

use regex::Regex;

use crate::err;
use crate::error::Result;
use crate::model::{Architecture, LinearShape, ModelShape};

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
    /// `path_initial_model_for_weight_conversion`): every rank doubles
    /// ([`LoraModule::plain_factors`](crate::peft::lora::LoraModule::plain_factors)) and every
    /// scale stays, so alpha doubles too (× √2 with rsLoRA, whose scale is alpha / √r).
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

#[cfg(test)]
mod tests {
    use super::*;

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
