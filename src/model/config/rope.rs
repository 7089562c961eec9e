//! RoPE settings from `config.json`: `rope_parameters` (transformers 5) or the older `rope_theta`
//! and `rope_scaling`, and Gemma 3's separate RoPE of sliding layers.

use serde_json::{Map, Value};

use super::FILE;
use super::fields::{Fields, object};
use crate::err;
use crate::error::Result;

/// How RoPE frequencies are derived (transformers' `rope_type`).
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    Default,
    Linear { factor: f64 },
    Llama3 { factor: f64, low_freq_factor: f64, high_freq_factor: f64, original_max_positions: f64 },
}

#[derive(Clone, Debug, PartialEq)]
pub struct RopeConfig {
    pub theta: f64,
    pub scaling: RopeScaling,
}

/// Gemma 3's RoPE of full and of sliding layers: `rope_parameters.{full,sliding}_attention`
/// (transformers 5), else `rope_theta` + `rope_scaling` for full layers and
/// `rope_local_base_freq` (unscaled) for sliding ones.
pub(super) fn gemma3_rope(f: &Fields) -> Result<(RopeConfig, RopeConfig)> {
    let params = object(f, "rope_parameters")?;
    let part = |name: &str| -> Result<Option<&Map<String, Value>>> {
        match params.and_then(|p| p.get(name)) {
            Some(Value::Object(p)) => Ok(Some(p)),
            Some(Value::Null) | None => Ok(None),
            Some(_) => Err(err!(InvalidConfig, "{FILE}: rope_parameters.{name} must be an object")),
        }
    };
    let global_theta = f.f64("rope_theta")?.unwrap_or(1e6);
    let local_theta = f.f64("rope_local_base_freq")?.unwrap_or(1e4);
    let global = match part("full_attention")? {
        Some(p) => rope_from(Some(p), theta_of(p, global_theta)?)?,
        None => rope_from(object(f, "rope_scaling")?, global_theta)?,
    };
    let local = match part("sliding_attention")? {
        Some(p) => rope_from(Some(p), theta_of(p, local_theta)?)?,
        None => RopeConfig { theta: local_theta, scaling: RopeScaling::Default },
    };
    Ok((global, local))
}

/// `rope_theta` of a RoPE parameter object, else `default`.
fn theta_of(params: &Map<String, Value>, default: f64) -> Result<f64> {
    match params.get("rope_theta") {
        Some(v) => v.as_f64().ok_or_else(|| err!(InvalidConfig, "{FILE}: rope_theta must be a number, got {v}")),
        None => Ok(default),
    }
}

/// RoPE from `rope_parameters` (transformers 5), else `rope_scaling` + top-level `rope_theta`.
pub(super) fn rope_config(f: &Fields) -> Result<RopeConfig> {
    let params = object(f, "rope_parameters")?;
    let top_theta = f.f64("rope_theta")?.unwrap_or(10000.0);
    match params {
        Some(p) => rope_from(Some(p), theta_of(p, top_theta)?),
        None => rope_from(object(f, "rope_scaling")?, top_theta),
    }
}

/// RoPE with base `theta` and the scaling that `scaling` (`rope_type` and its fields) describes.
fn rope_from(scaling: Option<&Map<String, Value>>, theta: f64) -> Result<RopeConfig> {
    if !(theta.is_finite() && theta > 1.0) {
        return Err(err!(InvalidConfig, "{FILE}: rope_theta must be a number above 1, got {theta}"));
    }
    let Some(s) = scaling else {
        return Ok(RopeConfig { theta, scaling: RopeScaling::Default });
    };
    let s = Fields(s);
    let kind = match s.str("rope_type")? {
        Some(kind) => Some(kind),
        None => s.str("type")?,
    };
    let scaling = match kind.as_deref().unwrap_or("default") {
        "default" => RopeScaling::Default,
        "linear" => RopeScaling::Linear { factor: s.req_f64("factor", "rope scaling")? },
        "llama3" => RopeScaling::Llama3 {
            factor: s.req_f64("factor", "rope scaling")?,
            low_freq_factor: s.req_f64("low_freq_factor", "rope scaling")?,
            high_freq_factor: s.req_f64("high_freq_factor", "rope scaling")?,
            original_max_positions: s.req_f64("original_max_position_embeddings", "rope scaling")?,
        },
        other => {
            return Err(err!(
                UnsupportedArchitecture,
                "{FILE}: rope_type \"{other}\" is not supported (default, linear, llama3 are)"
            ));
        }
    };
    Ok(RopeConfig { theta, scaling })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::ModelConfig;

    #[test]
    fn llama3_rope_scaling() {
        let c = ModelConfig::from_json(
            r#"{"model_type":"llama","vocab_size":10,"hidden_size":8,"intermediate_size":16,"num_hidden_layers":1,
                "num_attention_heads":2,"rope_theta":500000.0,"rope_scaling":{"rope_type":"llama3","factor":32.0,
                "low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192}}"#,
        )
        .unwrap();
        assert!(matches!(c.rope.unwrap().scaling, RopeScaling::Llama3 { .. }));
    }
}
