//! `config.json` of a Hugging Face causal LM, reduced to what the forward pass needs.
//!
//! Defaults follow the transformers config classes (`LlamaConfig`, `Qwen2Config`, `Qwen3Config`,
//! `Gemma3TextConfig`, `GPT2Config`) so that a hub config that omits a field means what it means in
//! transformers. Every size is bounded ([`MAX_DIMENSION`] and friends) so that an absurd file fails
//! here, before anything is built or allocated from it.

use serde_json::Value;

use crate::err;
use crate::error::Result;

mod fields;
mod layer_types;
mod rope;

use fields::Fields;
pub use layer_types::LayerAttention;
use layer_types::gemma3_layer_types;
pub use rope::{RopeConfig, RopeScaling};
use rope::{gemma3_rope, rope_config};

/// Model families webtune implements. Module paths follow each family's HF names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    /// `LlamaForCausalLM`: Llama, SmolLM2, TinyLlama (GQA, RMSNorm, SwiGLU, RoPE).
    Llama,
    /// `Qwen2ForCausalLM`: Llama plus q/k/v biases.
    Qwen2,
    /// `Qwen3ForCausalLM`: Llama plus per-head q/k RMSNorm before RoPE, explicit `head_dim`.
    Qwen3,
    /// `Gemma3ForCausalLM` (`gemma3_text`): scaled embedding, `(1 + w)` sandwich norms, q/k norms,
    /// sliding-window and full attention layers, GELU-tanh gated MLP.
    Gemma3,
    /// `GPT2LMHeadModel`: LayerNorm, learned positions, Conv1D weights stored `[in, out]`.
    Gpt2,
}

impl Architecture {
    pub fn name(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Qwen2 => "qwen2",
            Architecture::Qwen3 => "qwen3",
            Architecture::Gemma3 => "gemma3",
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
    /// Per-head RMSNorm of queries and keys over `head_dim`, before RoPE (Qwen3, Gemma 3).
    pub qk_norm: bool,
    /// Attention kind of each decoder layer (`num_layers` entries; all full except Gemma 3's).
    pub layer_types: Vec<LayerAttention>,
    /// Keys a query sees in a [`LayerAttention::Sliding`] layer, itself included.
    pub sliding_window: Option<usize>,
    /// RoPE of the sliding layers (Gemma 3's `rope_local_base_freq`); full layers use `rope`.
    pub local_rope: Option<RopeConfig>,
    /// Gemma 3: attention scores are scaled by `query_pre_attn_scalar^-0.5` instead of
    /// `head_dim^-0.5`.
    pub query_pre_attn_scalar: Option<f64>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
}

const FILE: &str = "config.json";

/// What to tell the user about supported model types.
const SUPPORTED: &str =
    "webtune supports llama (incl. SmolLM2, TinyLlama), qwen2, qwen3, gemma3_text (Gemma 3 text models) and gpt2";

/// Largest hidden, head or feature size accepted from `config.json` (the largest real models use
/// ~2^15); a bigger value is a corrupt or hostile file.
pub const MAX_DIMENSION: usize = 1 << 20;
/// Largest vocabulary accepted (real ones reach 262,144).
pub const MAX_VOCAB: usize = 1 << 24;
/// Largest layer or head count accepted (real ones stay below 200).
pub const MAX_LAYERS: usize = 4096;
/// Largest context length accepted.
pub const MAX_POSITIONS: usize = 1 << 24;

impl ModelConfig {
    /// Parses `config.json` text. Errors name the file and the offending field.
    pub fn from_json(text: &str) -> Result<Self> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| err!(InvalidConfig, "{FILE} is not valid JSON: {e}"))?;
        let obj = value.as_object().ok_or_else(|| err!(InvalidConfig, "{FILE} must hold a JSON object"))?;
        let fields = Fields(obj);
        let model_type = fields.str("model_type")?.unwrap_or_default();
        let config = match model_type.as_str() {
            "llama" => Self::llama(&fields, Architecture::Llama)?,
            "qwen2" => Self::llama(&fields, Architecture::Qwen2)?,
            "qwen3" => Self::llama(&fields, Architecture::Qwen3)?,
            "gemma3_text" => Self::gemma3(&fields)?,
            "gpt2" => Self::gpt2(&fields)?,
            "gemma3" => {
                return Err(err!(
                    UnsupportedArchitecture,
                    "{FILE}: model_type \"gemma3\" is the multimodal Gemma3ForConditionalGeneration (text + images), which webtune does not implement; use a text-only Gemma 3 checkpoint (model_type \"gemma3_text\", Gemma3ForCausalLM) such as google/gemma-3-270m, google/gemma-3-270m-it, google/gemma-3-1b-pt or google/gemma-3-1b-it"
                ));
            }
            "" => return Err(err!(InvalidConfig, "{FILE} has no \"model_type\"; {SUPPORTED}")),
            other => {
                return Err(err!(
                    UnsupportedArchitecture,
                    "{FILE}: model_type \"{other}\" is not supported; {SUPPORTED}"
                ));
            }
        };
        config.validate()?;
        Ok(config)
    }

    /// Llama, Qwen2 and Qwen3: the same decoder, with q/k/v biases (Qwen2) or q/k norms (Qwen3).
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
        let qwen2 = architecture == Architecture::Qwen2;
        let qwen = qwen2 || architecture == Architecture::Qwen3;
        if qwen && f.bool("use_sliding_window")?.unwrap_or(false) {
            return Err(err!(UnsupportedArchitecture, "{FILE}: use_sliding_window=true is not supported"));
        }
        let attention_bias = f.bool("attention_bias")?.unwrap_or(false);
        let num_layers = bounded_layers(f.req_usize("num_hidden_layers")?)?;
        Ok(ModelConfig {
            architecture,
            vocab_size: f.req_usize("vocab_size")?,
            hidden_size,
            intermediate_size: f.req_usize("intermediate_size")?,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            max_positions: f.usize("max_position_embeddings")?.unwrap_or(2048),
            norm_eps: f.f64("rms_norm_eps")?.unwrap_or(1e-6),
            tie_word_embeddings: f.bool("tie_word_embeddings")?.unwrap_or(false),
            activation,
            rope: Some(rope_config(f)?),
            qkv_bias: qwen2 || attention_bias,
            o_bias: !qwen2 && attention_bias,
            mlp_bias: f.bool("mlp_bias")?.unwrap_or(false),
            scale_attn_weights: true,
            scale_attn_by_inverse_layer_idx: false,
            qk_norm: architecture == Architecture::Qwen3,
            layer_types: vec![LayerAttention::Full; num_layers],
            sliding_window: None,
            local_rope: None,
            query_pre_attn_scalar: None,
            bos_token_id: f.u32("bos_token_id")?,
            eos_token_ids: f.u32_list("eos_token_id")?,
            pad_token_id: f.u32("pad_token_id")?,
        })
    }

    /// `Gemma3TextConfig`. `layer_types` says which layers slide; configs saved before it existed
    /// say it with `sliding_window_pattern` (every n-th layer is full), which transformers expands
    /// the same way. With neither, transformers would silently assume a pattern of 6.
    fn gemma3(f: &Fields) -> Result<Self> {
        let hidden_size = f.req_usize("hidden_size")?;
        let num_heads = f.usize("num_attention_heads")?.unwrap_or(8);
        let num_layers = bounded_layers(f.req_usize("num_hidden_layers")?)?;
        let activation = match f.str("hidden_activation")?.as_deref().unwrap_or("gelu_pytorch_tanh") {
            "gelu_pytorch_tanh" | "gelu_new" => Activation::GeluTanh,
            "gelu" => Activation::GeluErf,
            other => {
                return Err(err!(
                    UnsupportedArchitecture,
                    "{FILE}: hidden_activation \"{other}\" is not supported for gemma3_text"
                ));
            }
        };
        for key in ["attn_logit_softcapping", "final_logit_softcapping"] {
            if f.get(key).is_some() {
                return Err(err!(
                    UnsupportedArchitecture,
                    "{FILE}: \"{key}\" is set; Gemma 3 checkpoints have it null and webtune does not implement softcapping"
                ));
            }
        }
        if f.bool("use_bidirectional_attention")?.unwrap_or(false) {
            return Err(err!(
                UnsupportedArchitecture,
                "{FILE}: use_bidirectional_attention=true (an embedding model such as EmbeddingGemma) is not a causal LM"
            ));
        }
        let layer_types = gemma3_layer_types(f, num_layers)?;
        let (global, local) = gemma3_rope(f)?;
        Ok(ModelConfig {
            architecture: Architecture::Gemma3,
            vocab_size: f.usize("vocab_size")?.unwrap_or(262_208),
            hidden_size,
            intermediate_size: f.req_usize("intermediate_size")?,
            num_layers,
            num_heads,
            num_kv_heads: f.usize("num_key_value_heads")?.unwrap_or(4),
            head_dim: f.usize("head_dim")?.unwrap_or(256),
            max_positions: f.usize("max_position_embeddings")?.unwrap_or(131_072),
            norm_eps: f.f64("rms_norm_eps")?.unwrap_or(1e-6),
            tie_word_embeddings: f.bool("tie_word_embeddings")?.unwrap_or(true),
            activation,
            rope: Some(global),
            qkv_bias: f.bool("attention_bias")?.unwrap_or(false),
            o_bias: f.bool("attention_bias")?.unwrap_or(false),
            mlp_bias: false,
            scale_attn_weights: true,
            scale_attn_by_inverse_layer_idx: false,
            qk_norm: true,
            layer_types,
            sliding_window: Some(f.usize("sliding_window")?.unwrap_or(4096)),
            local_rope: Some(local),
            query_pre_attn_scalar: Some(f.f64("query_pre_attn_scalar")?.unwrap_or(256.0)),
            bos_token_id: f.u32("bos_token_id")?,
            eos_token_ids: f.u32_list("eos_token_id")?,
            pad_token_id: f.u32("pad_token_id")?,
        })
    }

    fn gpt2(f: &Fields) -> Result<Self> {
        let hidden_size = f.usize("n_embd")?.unwrap_or(768);
        let num_heads = f.usize("n_head")?.unwrap_or(12);
        let num_layers = bounded_layers(f.usize("n_layer")?.unwrap_or(12))?;
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
            num_layers,
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
            qk_norm: false,
            layer_types: vec![LayerAttention::Full; num_layers],
            sliding_window: None,
            local_rope: None,
            query_pre_attn_scalar: None,
            bos_token_id: f.u32("bos_token_id")?,
            eos_token_ids: f.u32_list("eos_token_id")?,
            pad_token_id: f.u32("pad_token_id")?,
        })
    }

    fn validate(&self) -> Result<()> {
        let sizes = [
            ("vocab_size", self.vocab_size, MAX_VOCAB),
            ("hidden_size", self.hidden_size, MAX_DIMENSION),
            ("intermediate_size", self.intermediate_size, MAX_DIMENSION),
            ("num_hidden_layers", self.num_layers, MAX_LAYERS),
            ("num_attention_heads", self.num_heads, MAX_LAYERS),
            ("num_key_value_heads", self.num_kv_heads, MAX_LAYERS),
            ("head_dim", self.head_dim, MAX_DIMENSION),
            ("max_position_embeddings", self.max_positions, MAX_POSITIONS),
        ];
        for (key, value, max) in sizes {
            if value == 0 {
                return Err(err!(InvalidConfig, "{FILE}: \"{key}\" must be positive"));
            }
            if value > max {
                return Err(too_large(key, value, max));
            }
        }
        if self.num_heads * self.head_dim > MAX_DIMENSION {
            return Err(err!(
                InvalidConfig,
                "{FILE}: num_attention_heads × head_dim = {} exceeds {MAX_DIMENSION}; the file is corrupt",
                self.num_heads * self.head_dim
            ));
        }
        if let Some(window) = self.sliding_window
            && window == 0
        {
            return Err(err!(InvalidConfig, "{FILE}: \"sliding_window\" must be positive"));
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

/// The layer count, checked before anything per layer is built from it.
fn bounded_layers(layers: usize) -> Result<usize> {
    if layers > MAX_LAYERS {
        return Err(too_large("num_hidden_layers", layers, MAX_LAYERS));
    }
    Ok(layers)
}

/// An error for a size beyond what any real model uses.
fn too_large(key: &str, value: usize, max: usize) -> crate::Error {
    err!(
        InvalidConfig,
        "{FILE}: \"{key}\" is {value}, more than any real model uses (at most {max}); the file is corrupt"
    )
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

    /// A hub Gemma 3 config as transformers 4.x wrote it: RoPE bases at the top level, scaling for
    /// the full layers only, layer types from the pattern.
    #[test]
    fn gemma3_hub_style_config() {
        let c = ModelConfig::from_json(
            r#"{"model_type":"gemma3_text","vocab_size":10,"hidden_size":8,"intermediate_size":16,
                "num_hidden_layers":7,"num_attention_heads":2,"num_key_value_heads":1,"head_dim":4,
                "rope_theta":1000000.0,"rope_local_base_freq":10000.0,"sliding_window_pattern":6,
                "rope_scaling":{"rope_type":"linear","factor":8.0},"sliding_window":512}"#,
        )
        .unwrap();
        use LayerAttention::{Full, Sliding};
        assert_eq!(c.layer_types, [Sliding, Sliding, Sliding, Sliding, Sliding, Full, Sliding]);
        assert_eq!(c.rope, Some(RopeConfig { theta: 1e6, scaling: RopeScaling::Linear { factor: 8.0 } }));
        assert_eq!(c.local_rope, Some(RopeConfig { theta: 1e4, scaling: RopeScaling::Default }));
        assert_eq!((c.sliding_window, c.query_pre_attn_scalar, c.qk_norm), (Some(512), Some(256.0), true));
        assert!(c.tie_word_embeddings);
    }

    #[test]
    fn qwen3_head_dim_need_not_divide_hidden() {
        let c = ModelConfig::from_json(
            r#"{"model_type":"qwen3","vocab_size":10,"hidden_size":8,"intermediate_size":16,"num_hidden_layers":1,
                "num_attention_heads":4,"num_key_value_heads":2,"head_dim":6}"#,
        )
        .unwrap();
        assert_eq!((c.head_dim, c.qk_norm, c.qkv_bias), (6, true, false));
    }
}
