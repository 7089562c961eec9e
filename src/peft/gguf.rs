//! LoRA adapters as GGUF files that llama.cpp loads (`llama-cli --lora`, `llama_adapter_lora_init`),
//! laid out as llama.cpp's own `convert_lora_to_gguf.py` lays them out. (The tests read them back
//! with their own strict reader, `tests/common/gguf_reader.rs`.)
//!
//! What this relies on, from the llama.cpp sources:
//! - Layout (`gguf-py/gguf/gguf_writer.py`, `constants.py`): little-endian; magic `GGUF`, version 3
//!   (u32), tensor count and KV count (u64); each KV as key (u64 length + UTF-8), value type (u32),
//!   value (arrays: element type u32, count u64, elements); each tensor info as name, n_dims (u32),
//!   dims (u64) in ggml `ne` order, the reverse of the torch shape, ggml type (u32, F32 = 0) and
//!   offset (u64) into the data section; zero padding to the alignment (32 unless
//!   `general.alignment` sets it); the tensor data, each tensor padded to the alignment.
//!   `ggml/src/gguf.cpp` rejects a file whose offsets are not exactly those running padded sums.
//! - Loader (`src/llama-adapter.cpp`): needs `general.type` = "adapter", `general.architecture` =
//!   the base model's and `adapter.type` = "lora"; reads `adapter.lora.alpha` (f32); pairs tensors
//!   named `<base tensor>.lora_a` / `.lora_b`; checks base `ne[0]` = `a.ne[0]`, base `ne[1]` =
//!   `b.ne[1]` and `a.ne[1]` = `b.ne[0]`.
//! - Application (`src/llama-graph.cpp` `build_lora_mm`, `src/llama-adapter.h` `get_scale`):
//!   `y += scale · b(a x)` with `scale = alpha / b.ne[0]` (the rank), or 1 when alpha is 0. So `a`
//!   is PEFT's `A [r, in]` and `b` is PEFT's `B [out, r]`, each written in torch order.
//! - Converter (`convert_lora_to_gguf.py`): writes `general.architecture`, `general.type`,
//!   `adapter.type`, `general.name` (from the adapter folder's model card), `adapter.lora.alpha` =
//!   `lora_alpha` as is, `general.quantization_version` = 2; F32 tensors by default; runs the base
//!   converter's per-tensor transforms (renaming, permutations) on each A/B pair.
//! - Base tensor names (`gguf-py/gguf/constants.py` `TENSOR_NAMES`, `tensor_mapping.py`):
//!   `blk.{N}.attn_q|attn_k|attn_v|attn_output|ffn_gate|ffn_up|ffn_down.weight` for
//!   `model.layers.{N}.self_attn.{q,k,v,o}_proj` / `mlp.{gate,up,down}_proj` (llama, qwen2, qwen3,
//!   gemma3), and
//!   `blk.{N}.attn_qkv|attn_output|ffn_up|ffn_down.weight` for GPT-2's
//!   `transformer.h.{N}.attn.c_attn|attn.c_proj|mlp.c_fc|mlp.c_proj`.
//! - Base transforms: `conversion/llama.py` (`LlamaModel`, `undo_permute`) reorders the rows of
//!   q_proj (by `num_attention_heads`) and k_proj (by `num_key_value_heads`) from HF's rotate-half
//!   RoPE order to llama.cpp's interleaved pairs; on a LoRA pair that reorders the rows of B.
//!   `conversion/qwen.py` (`Qwen2Model`, and `Qwen3Model` = architecture `qwen3`, a subclass) keeps
//!   q/k as they are (NEOX RoPE); so does `conversion/gemma.py` (`Gemma3Model`, architecture
//!   `gemma3`), which changes only the norm weights (`+ 1`), never a LoRA target.
//!   `conversion/gpt2.py` transposes the Conv1D weights `[in, out]` to `[out, in]` (`ne = [in,
//!   out]`, as `src/models/gpt2.cpp` creates `attn_qkv` with `{n_embd, 3·n_embd}`).
//!
//! Where this file deliberately differs from the converter, so that llama.cpp computes what PEFT
//! computes:
//! - GPT-2: the converter applies the Conv1D transpose to the A/B pair too, which swaps and
//!   transposes them (`lora_a` gets `ne = [out, r]`). But PEFT's factors of a Conv1D layer already
//!   have `nn.Linear` orientation, the orientation of the transposed base: llama.cpp rejects that
//!   file for non-square layers (c_attn, c_fc, mlp.c_proj) and transposes the square attn.c_proj
//!   delta. Here A and B are written untransposed.
//! - rsLoRA: the converter copies `lora_alpha`, so llama.cpp would scale by `alpha / r` instead of
//!   `alpha / √r`. Here `adapter.lora.alpha` is each layer's PEFT scale times its rank, which is
//!   `lora_alpha` for plain LoRA (what the converter writes) and `lora_alpha · √r` with rsLoRA.

use crate::err;
use crate::error::Result;
use crate::model::{Architecture, ModelConfig};
use crate::peft::Adapter;
use crate::peft::lora::LoraModule;
use crate::readback;

const MAGIC: &[u8; 4] = b"GGUF";
const VERSION: u32 = 3;
/// `GGUF_DEFAULT_ALIGNMENT`: used unless `general.alignment` says otherwise.
const DEFAULT_ALIGNMENT: usize = 32;
/// `GGML_QUANT_VERSION`, which every converter writes as `general.quantization_version`.
const QUANTIZATION_VERSION: u32 = 2;
/// The ggml tensor type code of 32-bit floats, the only one written here.
const GGML_TYPE_F32: u32 = 0;

/// The metadata value types this writer needs, with their `GGUFValueType` codes.
enum MetadataValue {
    U32(u32),
    F32(f32),
    String(&'static str),
}

impl MetadataValue {
    fn type_code(&self) -> u32 {
        match self {
            MetadataValue::U32(_) => 4,
            MetadataValue::F32(_) => 6,
            MetadataValue::String(_) => 8,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            MetadataValue::U32(v) => out.extend(v.to_le_bytes()),
            MetadataValue::F32(v) => out.extend(v.to_le_bytes()),
            MetadataValue::String(s) => write_string(out, s),
        }
    }
}

/// Serialises a LoRA adapter as a llama.cpp GGUF LoRA for the base model `config` describes: F32
/// tensors `blk.{N}.<tensor>.weight.lora_a` / `.lora_b` and the metadata llama.cpp requires. A
/// PiSSA adapter is written as the plain rank-2r LoRA PEFT converts it to, since llama.cpp applies
/// it to the original base weights.
pub async fn export_gguf(adapter: &Adapter, config: &ModelConfig) -> Result<Vec<u8>> {
    let lora = match adapter {
        Adapter::Lora(lora) if !lora.is_dora() => lora,
        other => {
            return Err(err!(
                InvalidOptions,
                "GGUF export is for plain LoRA adapters; llama.cpp cannot load a {} adapter. Export it as {}",
                other.method(),
                if other.export_formats().contains(&crate::peft::ExportFormat::Merged) {
                    "PEFT files or as a merged model"
                } else if matches!(other, Adapter::Bottleneck(_)) {
                    "AdapterHub files"
                } else {
                    "PEFT files"
                }
            ));
        }
    };
    if lora.modules.is_empty() {
        return Err(err!(InvalidOptions, "the adapter adapts no layer, so there is nothing to export"));
    }
    let alpha = shared_alpha(&lora.modules)?;
    let mut tensors = Vec::with_capacity(2 * lora.modules.len());
    for module in &lora.modules {
        let base = base_tensor_name(config.architecture, &module.path)?;
        let (a, b) = module.plain_factors();
        let [rank, fan_in] = a.dims();
        let [fan_out, _] = b.dims();
        let a = readback::floats(a).await?;
        let mut b = readback::floats(b).await?;
        if let Some(heads) = rope_permutation_heads(config, &module.path) {
            b = interleave_rope_rows(&b, fan_out, rank, heads).ok_or_else(|| {
                err!(InvalidConfig, "{}: {fan_out} rows do not split into {heads} heads of even size", module.path)
            })?;
        }
        tensors.push(F32Tensor { name: format!("{base}.lora_a"), shape: [rank, fan_in], data: a });
        tensors.push(F32Tensor { name: format!("{base}.lora_b"), shape: [fan_out, rank], data: b });
    }
    // No general.name: the converter takes it from the adapter folder's model card, which is not
    // at hand here, and llama.cpp does not read it.
    let metadata = [
        ("general.architecture", MetadataValue::String(llama_cpp_architecture(config.architecture))),
        ("general.type", MetadataValue::String("adapter")),
        ("adapter.type", MetadataValue::String("lora")),
        ("adapter.lora.alpha", MetadataValue::F32(alpha as f32)),
        ("general.quantization_version", MetadataValue::U32(QUANTIZATION_VERSION)),
    ];
    Ok(encode(&metadata, &tensors))
}

/// The `adapter.lora.alpha` that makes llama.cpp's `alpha / rank` equal every layer's PEFT scale,
/// with the rank of the factors written ([`LoraModule::plain_factors`]: PiSSA's are 2r). One alpha
/// per file cannot express layers whose `scale · rank` differ (`alpha_pattern`, or rsLoRA with
/// `rank_pattern`).
fn shared_alpha(modules: &[LoraModule]) -> Result<f64> {
    let needed = |m: &LoraModule| m.scale * m.plain_factors().0.dims()[0] as f64;
    let first = &modules[0];
    let alpha = needed(first);
    for module in &modules[1..] {
        let other = needed(module);
        if (other - alpha).abs() > 1e-6 * alpha.abs().max(other.abs()) {
            return Err(err!(
                InvalidOptions,
                "llama.cpp scales every layer of a GGUF LoRA by one adapter.lora.alpha divided by the layer's rank, \
                 but {} needs alpha {alpha} and {} needs alpha {other}, from alpha_pattern or from rsLoRA with \
                 rank_pattern; export a PEFT adapter instead, or train without those patterns",
                first.path,
                module.path
            ));
        }
    }
    if alpha == 0.0 {
        return Err(err!(
            InvalidOptions,
            "an adapter with lora_alpha 0 cannot be exported to GGUF: llama.cpp reads adapter.lora.alpha 0 as \"no scaling\""
        ));
    }
    Ok(alpha)
}

/// `MODEL_ARCH_NAMES` of the base model's architecture.
fn llama_cpp_architecture(architecture: Architecture) -> &'static str {
    match architecture {
        Architecture::Llama => "llama",
        Architecture::Qwen2 => "qwen2",
        Architecture::Qwen3 => "qwen3",
        Architecture::Gemma3 => "gemma3",
        Architecture::Gpt2 => "gpt2",
    }
}

/// The GGUF name of the base weight a layer's LoRA applies to (`blk.0.attn_q.weight`).
fn base_tensor_name(architecture: Architecture, path: &str) -> Result<String> {
    let (prefix, names): (&str, &[(&str, &str)]) = match architecture {
        Architecture::Llama | Architecture::Qwen2 | Architecture::Qwen3 | Architecture::Gemma3 => (
            "model.layers.",
            &[
                ("self_attn.q_proj", "attn_q"),
                ("self_attn.k_proj", "attn_k"),
                ("self_attn.v_proj", "attn_v"),
                ("self_attn.o_proj", "attn_output"),
                ("mlp.gate_proj", "ffn_gate"),
                ("mlp.up_proj", "ffn_up"),
                ("mlp.down_proj", "ffn_down"),
            ],
        ),
        Architecture::Gpt2 => (
            "transformer.h.",
            &[
                ("attn.c_attn", "attn_qkv"),
                ("attn.c_proj", "attn_output"),
                ("mlp.c_fc", "ffn_up"),
                ("mlp.c_proj", "ffn_down"),
            ],
        ),
    };
    path.strip_prefix(prefix)
        .and_then(|rest| rest.split_once('.'))
        .and_then(|(layer, module)| {
            let layer: usize = layer.parse().ok()?;
            let (_, name) = names.iter().find(|(hf, _)| *hf == module)?;
            Some(format!("blk.{layer}.{name}.weight"))
        })
        .ok_or_else(|| {
            let known: Vec<&str> = names.iter().map(|(hf, _)| *hf).collect();
            err!(
                InvalidOptions,
                "layer {path} has no llama.cpp {} tensor to attach a LoRA to (GGUF export covers {known:?} in every layer)",
                llama_cpp_architecture(architecture)
            )
        })
}

/// The head count whose RoPE row order llama.cpp's Llama conversion changes for this layer, if any.
fn rope_permutation_heads(config: &ModelConfig, path: &str) -> Option<usize> {
    if config.architecture != Architecture::Llama {
        return None;
    }
    if path.ends_with(".self_attn.q_proj") {
        Some(config.num_heads)
    } else if path.ends_with(".self_attn.k_proj") {
        Some(config.num_kv_heads)
    } else {
        None
    }
}

/// `LlamaModel.permute` on the rows of a row-major `[rows, cols]` matrix: within each head, row
/// `2i + j` becomes the old row `j · head_dim/2 + i` (rotate-half pairs `(i, i + half)` become
/// adjacent). `None` when the rows do not split into heads of even size.
fn interleave_rope_rows(data: &[f32], rows: usize, cols: usize, heads: usize) -> Option<Vec<f32>> {
    if heads == 0 || !rows.is_multiple_of(2 * heads) {
        return None;
    }
    let half = rows / heads / 2;
    let mut out = Vec::with_capacity(data.len());
    for head in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let row = head * 2 * half + j * half + i;
                out.extend_from_slice(&data[row * cols..(row + 1) * cols]);
            }
        }
    }
    Some(out)
}

/// A tensor to write: row-major data of a torch-order `shape`.
struct F32Tensor {
    name: String,
    shape: [usize; 2],
    data: Vec<f32>,
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

fn pad_to_alignment(out: &mut Vec<u8>) {
    out.resize(out.len().next_multiple_of(DEFAULT_ALIGNMENT), 0);
}

/// The whole file, as `GGUFWriter` writes it: header, KVs, tensor infos, padding, padded data.
fn encode(metadata: &[(&str, MetadataValue)], tensors: &[F32Tensor]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(MAGIC);
    out.extend(VERSION.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        write_string(&mut out, key);
        out.extend(value.type_code().to_le_bytes());
        value.write(&mut out);
    }
    let mut offset = 0;
    for tensor in tensors {
        write_string(&mut out, &tensor.name);
        out.extend((tensor.shape.len() as u32).to_le_bytes());
        for dim in tensor.shape.iter().rev() {
            out.extend((*dim as u64).to_le_bytes());
        }
        out.extend(GGML_TYPE_F32.to_le_bytes());
        out.extend((offset as u64).to_le_bytes());
        offset += (4 * tensor.data.len()).next_multiple_of(DEFAULT_ALIGNMENT);
    }
    pad_to_alignment(&mut out);
    for tensor in tensors {
        for value in &tensor.data {
            out.extend(value.to_le_bytes());
        }
        pad_to_alignment(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_layers_map_to_llama_cpp_tensor_names() {
        let name = |arch, path| base_tensor_name(arch, path).unwrap();
        assert_eq!(name(Architecture::Llama, "model.layers.0.self_attn.q_proj"), "blk.0.attn_q.weight");
        assert_eq!(name(Architecture::Llama, "model.layers.11.self_attn.o_proj"), "blk.11.attn_output.weight");
        assert_eq!(name(Architecture::Qwen2, "model.layers.3.mlp.gate_proj"), "blk.3.ffn_gate.weight");
        assert_eq!(name(Architecture::Qwen2, "model.layers.3.mlp.down_proj"), "blk.3.ffn_down.weight");
        assert_eq!(name(Architecture::Qwen3, "model.layers.2.self_attn.k_proj"), "blk.2.attn_k.weight");
        assert_eq!(name(Architecture::Gemma3, "model.layers.1.mlp.up_proj"), "blk.1.ffn_up.weight");
        assert_eq!(llama_cpp_architecture(Architecture::Qwen3), "qwen3");
        assert_eq!(llama_cpp_architecture(Architecture::Gemma3), "gemma3");
        assert_eq!(name(Architecture::Gpt2, "transformer.h.1.attn.c_attn"), "blk.1.attn_qkv.weight");
        assert_eq!(name(Architecture::Gpt2, "transformer.h.1.attn.c_proj"), "blk.1.attn_output.weight");
        assert_eq!(name(Architecture::Gpt2, "transformer.h.1.mlp.c_fc"), "blk.1.ffn_up.weight");
        assert_eq!(name(Architecture::Gpt2, "transformer.h.1.mlp.c_proj"), "blk.1.ffn_down.weight");
        let unknown = base_tensor_name(Architecture::Gpt2, "model.layers.0.self_attn.q_proj").unwrap_err();
        assert!(unknown.message.contains("no llama.cpp gpt2 tensor"), "{}", unknown.message);
    }

    #[test]
    fn rope_rows_interleave_per_head_like_llama_permute() {
        // 2 heads of 4 rows, 1 column: per head the rotate-half order [0 1 | 2 3] becomes 0 2 1 3.
        let rows: Vec<f32> = (0..8).map(|r| r as f32).collect();
        assert_eq!(interleave_rope_rows(&rows, 8, 1, 2).unwrap(), [0., 2., 1., 3., 4., 6., 5., 7.]);
        // Whole rows move: 1 head of 4 rows, 2 columns.
        let wide: Vec<f32> = (0..8).map(|v| v as f32).collect();
        assert_eq!(interleave_rope_rows(&wide, 4, 2, 1).unwrap(), [0., 1., 4., 5., 2., 3., 6., 7.]);
        assert!(interleave_rope_rows(&rows, 8, 1, 3).is_none());
    }

    #[test]
    fn tensor_data_starts_and_ends_aligned() {
        let tensors = [
            F32Tensor { name: "x.lora_a".into(), shape: [1, 3], data: vec![1.0, 2.0, 3.0] },
            F32Tensor { name: "x.lora_b".into(), shape: [2, 1], data: vec![-1.0, 0.5] },
        ];
        let bytes = encode(&[("general.type", MetadataValue::String("adapter"))], &tensors);
        assert_eq!(bytes.len() % DEFAULT_ALIGNMENT, 0);
        // The second tensor starts one aligned block after the first, at the end of the file.
        let second = bytes.len() - DEFAULT_ALIGNMENT;
        assert_eq!(bytes[second..second + 8], [(-1f32).to_le_bytes(), 0.5f32.to_le_bytes()].concat());
        let first = second - DEFAULT_ALIGNMENT;
        assert_eq!(bytes[first..first + 4], 1f32.to_le_bytes());
    }
}
