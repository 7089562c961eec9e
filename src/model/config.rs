//! `config.json` of a Hugging Face causal LM, reduced to what the forward pass needs.
//!
//! Defaults follow the transformers config classes (`LlamaConfig`, `Qwen2Config`, `GPT2Config`)
//! so that a hub config that omits a field means what it means in transformers.

use serde_json::{Map, Value};

use crate::err;
use crate::error::Result;

/// Model families webtune implements. Module paths follow each family's HF names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    /// `LlamaForCausalLM`: Llama, SmolLM2, TinyLlama (GQA, RMSNorm, SwiGLU, RoPE).
    Llama,
    /// `Qwen2ForCausalLM`: Llama plus q/k/v biases.
    Qwen2,
    /// `GPT2LMHeadModel`: LayerNorm, learned positions, Conv1D weights stored `[in, out]`.
    Gpt2,
}

impl Architecture {
    pub fn name(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Qwen2 => "qwen2",
            Architecture::Gpt2 => "gpt2",
        }
    }
}

/// The MLP non-linearity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Silu,
    /// `gelu_new` / `gelu_pytorch_tanh`: the tanh approximation.
    GeluTanh,
    /// `gelu`: the exact erf form.
    GeluErf,
}

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

#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub max_positions: usize,
    pub norm_eps: f64,
    pub tie_word_embeddings: bool,
    pub activation: Activation,
    /// RoPE for Llama-family models; GPT-2 uses learned positions instead.
    pub rope: Option<RopeConfig>,
    /// Bias on the q/k/v projections (always for Qwen2, `attention_bias` for Llama).
    pub qkv_bias: bool,
    /// Bias on the attention output projection (`attention_bias` for Llama).
    pub o_bias: bool,
    /// Bias on the MLP projections (`mlp_bias` for Llama).
    pub mlp_bias: bool,
    /// GPT-2's `scale_attn_weights`: divide scores by sqrt(head_dim).
    pub scale_attn_weights: bool,
    /// GPT-2's `scale_attn_by_inverse_layer_idx`: also divide scores by layer index + 1.
    pub scale_attn_by_inverse_layer_idx: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
}

const FILE: &str = "config.json";

impl ModelConfig {
    /// Parses `config.json` text. Errors name the file and the offending field.
    pub fn from_json(text: &str) -> Result<Self> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| err!(InvalidConfig, "{FILE} is not valid JSON: {e}"))?;
        let obj = value.as_object().ok_or_else(|| err!(InvalidConfig, "{FILE} must hold a JSON object"))?;
        let fields = Fields(obj);
        let model_type = fields.str("model_type")?.unwrap_or_default();
        let architecture = match model_type.as_str() {
            "llama" => Architecture::Llama,
            "qwen2" => Architecture::Qwen2,
            "gpt2" => Architecture::Gpt2,
            "" => {
                return Err(err!(
                    InvalidConfig,
                    "{FILE} has no \"model_type\"; webtune supports llama (incl. SmolLM2, TinyLlama), qwen2 and gpt2"
                ));
            }
            other => {
                return Err(err!(
                    UnsupportedArchitecture,
                    "{FILE}: model_type \"{other}\" is not supported; webtune supports llama (incl. SmolLM2, TinyLlama), qwen2 and gpt2"
                ));
            }
        };
        let config = match architecture {
            Architecture::Gpt2 => Self::gpt2(&fields)?,
            Architecture::Llama | Architecture::Qwen2 => Self::llama(&fields, architecture)?,
        };
        config.validate()?;
        Ok(config)
    }

    fn llama(f: &Fields, architecture: Architecture) -> Result<Self> {
        let hidden_size = f.req_usize("hidden_size")?;
        let num_heads = f.req_usize("num_attention_heads")?;
        let num_kv_heads = f.usize("num_key_value_heads")?.unwrap_or(num_heads);
        let head_dim = f.usize("head_dim")?.unwrap_or(hidden_size / num_heads.max(1));
        let activation = match f.str("hidden_act")?.as_deref().unwrap_or("silu") {
            "silu" | "swish" => Activation::Silu,
            other => {
                return Err(err!(
                    UnsupportedArchitecture,
                    "{FILE}: hidden_act \"{other}\" is not supported for {} (only silu)",
                    architecture.name()
                ));
            }
        };
        let qwen = architecture == Architecture::Qwen2;
        if qwen && f.bool("use_sliding_window")?.unwrap_or(false) {
            return Err(err!(UnsupportedArchitecture, "{FILE}: use_sliding_window=true is not supported"));
        }
        let attention_bias = f.bool("attention_bias")?.unwrap_or(false);
        Ok(ModelConfig {
            architecture,
            vocab_size: f.req_usize("vocab_size")?,
            hidden_size,
            intermediate_size: f.req_usize("intermediate_size")?,
            num_layers: f.req_usize("num_hidden_layers")?,
            num_heads,
            num_kv_heads,
            head_dim,
            max_positions: f.usize("max_position_embeddings")?.unwrap_or(2048),
            norm_eps: f.f64("rms_norm_eps")?.unwrap_or(1e-6),
            tie_word_embeddings: f.bool("tie_word_embeddings")?.unwrap_or(false),
            activation,
            rope: Some(rope_config(f)?),
            qkv_bias: qwen || attention_bias,
            o_bias: !qwen && attention_bias,
            mlp_bias: f.bool("mlp_bias")?.unwrap_or(false),
            scale_attn_weights: true,
            scale_attn_by_inverse_layer_idx: false,
            bos_token_id: f.u32("bos_token_id")?,
            eos_token_ids: f.u32_list("eos_token_id")?,
            pad_token_id: f.u32("pad_token_id")?,
        })
    }

    fn gpt2(f: &Fields) -> Result<Self> {
        let hidden_size = f.usize("n_embd")?.unwrap_or(768);
        let num_heads = f.usize("n_head")?.unwrap_or(12);
        let activation = match f.str("activation_function")?.as_deref().unwrap_or("gelu_new") {
            "gelu_new" | "gelu_pytorch_tanh" => Activation::GeluTanh,
            "gelu" => Activation::GeluErf,
            other => {
                return Err(err!(
                    UnsupportedArchitecture,
                    "{FILE}: activation_function \"{other}\" is not supported for gpt2"
                ));
            }
        };
        if f.bool("add_cross_attention")?.unwrap_or(false) {
            return Err(err!(UnsupportedArchitecture, "{FILE}: add_cross_attention=true is not supported"));
        }
        Ok(ModelConfig {
            architecture: Architecture::Gpt2,
            vocab_size: f.usize("vocab_size")?.unwrap_or(50257),
            hidden_size,
            intermediate_size: f.usize("n_inner")?.unwrap_or(4 * hidden_size),
            num_layers: f.usize("n_layer")?.unwrap_or(12),
            num_heads,
            num_kv_heads: num_heads,
            head_dim: hidden_size / num_heads.max(1),
            max_positions: f.usize("n_positions")?.unwrap_or(1024),
            norm_eps: f.f64("layer_norm_epsilon")?.unwrap_or(1e-5),
            tie_word_embeddings: f.bool("tie_word_embeddings")?.unwrap_or(true),
            activation,
            rope: None,
            qkv_bias: true,
            o_bias: true,
            mlp_bias: true,
            scale_attn_weights: f.bool("scale_attn_weights")?.unwrap_or(true),
            scale_attn_by_inverse_layer_idx: f.bool("scale_attn_by_inverse_layer_idx")?.unwrap_or(false),
            bos_token_id: f.u32("bos_token_id")?,
            eos_token_ids: f.u32_list("eos_token_id")?,
            pad_token_id: f.u32("pad_token_id")?,
        })
    }

    fn validate(&self) -> Result<()> {
        let positive = [
            ("vocab size", self.vocab_size),
            ("hidden size", self.hidden_size),
            ("intermediate size", self.intermediate_size),
            ("number of layers", self.num_layers),
            ("number of attention heads", self.num_heads),
            ("number of key/value heads", self.num_kv_heads),
            ("head dimension", self.head_dim),
        ];
        for (what, value) in positive {
            if value == 0 {
                return Err(err!(InvalidConfig, "{FILE}: the {what} must be positive"));
            }
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Err(err!(
                InvalidConfig,
                "{FILE}: num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
                self.num_heads,
                self.num_kv_heads
            ));
        }
        if self.architecture == Architecture::Gpt2 && !self.hidden_size.is_multiple_of(self.num_heads) {
            return Err(err!(
                InvalidConfig,
                "{FILE}: n_embd ({}) must be a multiple of n_head ({})",
                self.hidden_size,
                self.num_heads
            ));
        }
        if self.rope.is_some() && !self.head_dim.is_multiple_of(2) {
            return Err(err!(InvalidConfig, "{FILE}: RoPE needs an even head dimension, got {}", self.head_dim));
        }
        Ok(())
    }

    /// Number of query heads that share one key/value head.
    pub fn kv_groups(&self) -> usize {
        self.num_heads / self.num_kv_heads
    }
}

/// RoPE from `rope_parameters` (transformers 5), else `rope_scaling` + top-level `rope_theta`.
fn rope_config(f: &Fields) -> Result<RopeConfig> {
    let params = match f.0.get("rope_parameters") {
        Some(Value::Object(p)) => Some(p),
        Some(Value::Null) | None => None,
        Some(_) => return Err(err!(InvalidConfig, "{FILE}: rope_parameters must be an object")),
    };
    let scaling = match (params, f.0.get("rope_scaling")) {
        (Some(p), _) => Some(p),
        (None, Some(Value::Object(s))) => Some(s),
        (None, Some(Value::Null) | None) => None,
        (None, Some(_)) => return Err(err!(InvalidConfig, "{FILE}: rope_scaling must be an object or null")),
    };
    let theta = match params.and_then(|p| p.get("rope_theta")) {
        Some(v) => {
            v.as_f64().ok_or_else(|| err!(InvalidConfig, "{FILE}: rope_parameters.rope_theta must be a number"))?
        }
        None => f.f64("rope_theta")?.unwrap_or(10000.0),
    };
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

/// Typed access to a JSON object with errors that name `config.json` and the field.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    fn usize(&self, key: &str) -> Result<Option<usize>> {
        self.get(key)
            .map(|v| {
                v.as_u64()
                    .map(|n| n as usize)
                    .ok_or_else(|| err!(InvalidConfig, "{FILE}: \"{key}\" must be a non-negative integer, got {v}"))
            })
            .transpose()
    }

    fn req_usize(&self, key: &str) -> Result<usize> {
        self.usize(key)?.ok_or_else(|| err!(InvalidConfig, "{FILE}: required field \"{key}\" is missing"))
    }

    fn u32(&self, key: &str) -> Result<Option<u32>> {
        Ok(self.usize(key)?.map(|n| n as u32))
    }

    /// A token id field that may hold one id or a list of ids (`eos_token_id`).
    fn u32_list(&self, key: &str) -> Result<Vec<u32>> {
        match self.get(key) {
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_u64()
                        .map(|n| n as u32)
                        .ok_or_else(|| err!(InvalidConfig, "{FILE}: \"{key}\" must hold token ids, got {v}"))
                })
                .collect(),
            Some(_) => Ok(self.u32(key)?.into_iter().collect()),
            None => Ok(Vec::new()),
        }
    }

    fn f64(&self, key: &str) -> Result<Option<f64>> {
        self.get(key)
            .map(|v| v.as_f64().ok_or_else(|| err!(InvalidConfig, "{FILE}: \"{key}\" must be a number, got {v}")))
            .transpose()
    }

    fn req_f64(&self, key: &str, within: &str) -> Result<f64> {
        self.f64(key)?.ok_or_else(|| err!(InvalidConfig, "{FILE}: {within} needs \"{key}\""))
    }

    fn bool(&self, key: &str) -> Result<Option<bool>> {
        self.get(key)
            .map(|v| v.as_bool().ok_or_else(|| err!(InvalidConfig, "{FILE}: \"{key}\" must be true or false, got {v}")))
            .transpose()
    }

    fn str(&self, key: &str) -> Result<Option<String>> {
        self.get(key)
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| err!(InvalidConfig, "{FILE}: \"{key}\" must be a string, got {v}"))
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama_defaults_and_rope_parameters() {
        let c = ModelConfig::from_json(
            r#"{"model_type":"llama","vocab_size":10,"hidden_size":8,"intermediate_size":16,
                "num_hidden_layers":1,"num_attention_heads":2,"rope_parameters":{"rope_theta":500.0,"rope_type":"default"}}"#,
        )
        .unwrap();
        assert_eq!(c.num_kv_heads, 2);
        assert_eq!(c.head_dim, 4);
        assert_eq!(c.rope, Some(RopeConfig { theta: 500.0, scaling: RopeScaling::Default }));
        assert!(!c.tie_word_embeddings);
    }

    #[test]
    fn unsupported_model_type_is_named() {
        let e = ModelConfig::from_json(r#"{"model_type":"mamba"}"#).unwrap_err();
        assert_eq!(e.code, crate::error::ErrorCode::UnsupportedArchitecture);
        assert!(e.message.contains("mamba") && e.message.contains("config.json"), "{e}");
    }

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
