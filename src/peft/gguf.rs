//! LoRA adapters as GGUF files that llama.cpp loads (`llama-cli --lora`, `llama_adapter_lora_init`),
//! laid out as llama.cpp's own `convert_lora_to_gguf.py` lays them out, and a small strict GGUF
//! reader to check them.
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

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use burn::tensor::Tensor;

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
/// `GGML_MAX_DIMS`.
const MAX_DIMS: usize = 4;
/// The ggml tensor type code of 32-bit floats, the only one written and read here.
pub const GGML_TYPE_F32: u32 = 0;

/// A GGUF metadata value (`GGUFValueType`).
#[derive(Clone, Debug, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    /// `element_type` is the value type code of the items (kept so that empty arrays round-trip).
    Array {
        element_type: u32,
        items: Vec<GgufValue>,
    },
    U64(u64),
    I64(i64),
    F64(f64),
}

impl GgufValue {
    /// The `GGUFValueType` code.
    fn type_code(&self) -> u32 {
        match self {
            GgufValue::U8(_) => 0,
            GgufValue::I8(_) => 1,
            GgufValue::U16(_) => 2,
            GgufValue::I16(_) => 3,
            GgufValue::U32(_) => 4,
            GgufValue::I32(_) => 5,
            GgufValue::F32(_) => 6,
            GgufValue::Bool(_) => 7,
            GgufValue::String(_) => 8,
            GgufValue::Array { .. } => 9,
            GgufValue::U64(_) => 10,
            GgufValue::I64(_) => 11,
            GgufValue::F64(_) => 12,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            GgufValue::U8(v) => out.push(*v),
            GgufValue::I8(v) => out.extend(v.to_le_bytes()),
            GgufValue::U16(v) => out.extend(v.to_le_bytes()),
            GgufValue::I16(v) => out.extend(v.to_le_bytes()),
            GgufValue::U32(v) => out.extend(v.to_le_bytes()),
            GgufValue::I32(v) => out.extend(v.to_le_bytes()),
            GgufValue::F32(v) => out.extend(v.to_le_bytes()),
            GgufValue::Bool(v) => out.push(u8::from(*v)),
            GgufValue::String(s) => write_string(out, s),
            GgufValue::Array { element_type, items } => {
                out.extend(element_type.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                for item in items {
                    item.write(out);
                }
            }
            GgufValue::U64(v) => out.extend(v.to_le_bytes()),
            GgufValue::I64(v) => out.extend(v.to_le_bytes()),
            GgufValue::F64(v) => out.extend(v.to_le_bytes()),
        }
    }
}

/// Serialises a LoRA adapter as a llama.cpp GGUF LoRA for the base model `config` describes: F32
/// tensors `blk.{N}.<tensor>.weight.lora_a` / `.lora_b` and the metadata llama.cpp requires. A
/// PiSSA adapter is written as the plain rank-2r LoRA PEFT converts it to, since llama.cpp applies
/// it to the original base weights.
pub async fn export_gguf(adapter: &Adapter, config: &ModelConfig) -> Result<Vec<u8>> {
    let lora = match adapter {
        Adapter::Lora(lora) => lora,
        Adapter::Prompt(_) => {
            return Err(err!(
                InvalidOptions,
                "GGUF export is for LoRA adapters; llama.cpp has no prompt-tuning adapters"
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
        let (a, b) = plain_factors(module);
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
    let text = |s: &str| GgufValue::String(s.to_owned());
    let metadata = [
        ("general.architecture", text(llama_cpp_architecture(config.architecture))),
        ("general.type", text("adapter")),
        ("adapter.type", text("lora")),
        ("adapter.lora.alpha", GgufValue::F32(alpha as f32)),
        ("general.quantization_version", GgufValue::U32(QUANTIZATION_VERSION)),
    ];
    Ok(encode(&metadata, &tensors))
}

/// The `adapter.lora.alpha` that makes llama.cpp's `alpha / rank` equal every layer's PEFT scale.
/// One alpha per file cannot express layers whose `scale · rank` differ (`alpha_pattern`, or
/// rsLoRA with `rank_pattern`).
fn shared_alpha(modules: &[LoraModule]) -> Result<f64> {
    let needed = |m: &LoraModule| m.scale * exported_rank(m) as f64;
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

/// The rank llama.cpp sees: PiSSA's conversion doubles it.
fn exported_rank(module: &LoraModule) -> usize {
    if module.pissa_initial.is_some() { 2 * module.rank() } else { module.rank() }
}

/// `(A, B)` of a plain LoRA with the same delta on the original base weights. PiSSA trains against
/// the residual `W - scale·B₀A₀`; PEFT's conversion folds that in: `A' = [A; A₀]`, `B' = [B, -B₀]`.
fn plain_factors(module: &LoraModule) -> (Tensor<2>, Tensor<2>) {
    let (a, b) = (module.a.clone(), module.b.clone());
    match &module.pissa_initial {
        Some((a0, b0)) => (Tensor::cat(vec![a, a0.clone()], 0), Tensor::cat(vec![b, b0.clone().neg()], 1)),
        None => (a, b),
    }
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
fn encode(metadata: &[(&str, GgufValue)], tensors: &[F32Tensor]) -> Vec<u8> {
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

/// One tensor's entry in a GGUF file.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufTensorInfo {
    pub name: String,
    /// ggml `ne` order: the torch shape reversed (`lora_a` of `A [r, in]` is `[in, r]`).
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    /// Byte offset from the start of the data section.
    pub offset: u64,
}

impl GgufTensorInfo {
    fn byte_len(&self) -> usize {
        4 * self.dims.iter().product::<u64>() as usize
    }
}

/// A parsed GGUF file: its metadata and tensor infos, borrowing the tensor data from the bytes.
#[derive(Debug)]
pub struct GgufFile<'a> {
    pub metadata: BTreeMap<String, GgufValue>,
    /// In file order.
    pub tensors: Vec<GgufTensorInfo>,
    data_section: &'a [u8],
}

impl GgufFile<'_> {
    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// A tensor's values in storage order (row-major in the torch shape).
    pub fn tensor_f32(&self, name: &str) -> Result<Vec<f32>> {
        let info = self.tensor(name).ok_or_else(|| err!(InvalidAdapter, "the GGUF file has no tensor \"{name}\""))?;
        let start = info.offset as usize;
        let bytes = &self.data_section[start..start + info.byte_len()];
        Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
    }
}

/// Parses a GGUF (version 3) file with F32 tensors, checking what llama.cpp's `gguf.cpp` checks:
/// unique keys and tensor names, a power-of-two `general.alignment`, tensor offsets that follow
/// one another with padding, and tensor data inside the file. Errors are `InvalidAdapter`.
pub fn read_gguf(bytes: &[u8]) -> Result<GgufFile<'_>> {
    let mut cursor = Cursor { bytes, pos: 0, section: "header" };
    let magic = cursor.take(4)?;
    if magic != MAGIC {
        return Err(err!(
            InvalidAdapter,
            "not a GGUF file: it starts with {:?} instead of \"GGUF\"",
            String::from_utf8_lossy(magic)
        ));
    }
    let version = cursor.u32()?;
    if version != VERSION {
        return Err(err!(
            InvalidAdapter,
            "GGUF version {version} is not supported (only version {VERSION}, which llama.cpp writes)"
        ));
    }
    let tensor_count = cursor.u64()?;
    let kv_count = cursor.u64()?;

    cursor.section = "metadata";
    let mut metadata = BTreeMap::new();
    for _ in 0..kv_count {
        let key = cursor.string()?;
        let type_code = cursor.u32()?;
        let value = cursor.value(type_code, &key)?;
        match metadata.entry(key) {
            Entry::Occupied(e) => return Err(err!(InvalidAdapter, "GGUF metadata key \"{}\" appears twice", e.key())),
            Entry::Vacant(e) => e.insert(value),
        };
    }
    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(GgufValue::U32(a)) if a.is_power_of_two() => *a as usize,
        Some(other) => {
            return Err(err!(InvalidAdapter, "general.alignment must be a power of two (u32), not {other:?}"));
        }
    };

    cursor.section = "tensor infos";
    let mut tensors: Vec<GgufTensorInfo> = Vec::new();
    let mut data_len: u64 = 0;
    for _ in 0..tensor_count {
        let name = cursor.string()?;
        if tensors.iter().any(|t| t.name == name) {
            return Err(err!(InvalidAdapter, "GGUF tensor \"{name}\" appears twice"));
        }
        let n_dims = cursor.u32()? as usize;
        if !(1..=MAX_DIMS).contains(&n_dims) {
            return Err(err!(
                InvalidAdapter,
                "GGUF tensor \"{name}\" has {n_dims} dimensions (1 to {MAX_DIMS} allowed)"
            ));
        }
        let dims = (0..n_dims).map(|_| cursor.u64()).collect::<Result<Vec<u64>>>()?;
        let ggml_type = cursor.u32()?;
        if ggml_type != GGML_TYPE_F32 {
            return Err(err!(
                InvalidAdapter,
                "GGUF tensor \"{name}\" has ggml type {ggml_type}; only F32 ({GGML_TYPE_F32}) tensors are supported"
            ));
        }
        let offset = cursor.u64()?;
        if offset != data_len {
            return Err(err!(
                InvalidAdapter,
                "GGUF tensor \"{name}\" starts at data offset {offset}, expected {data_len}"
            ));
        }
        let byte_len = dims
            .iter()
            .try_fold(4u64, |n, &d| n.checked_mul(d))
            .and_then(|n| n.checked_next_multiple_of(alignment as u64))
            .ok_or_else(|| err!(InvalidAdapter, "GGUF tensor \"{name}\" is impossibly large ({dims:?})"))?;
        data_len = data_len
            .checked_add(byte_len)
            .ok_or_else(|| err!(InvalidAdapter, "the GGUF tensor data is impossibly large"))?;
        tensors.push(GgufTensorInfo { name, dims, ggml_type, offset });
    }

    let data_start = cursor.pos.next_multiple_of(alignment);
    let available = bytes.len().saturating_sub(data_start) as u64;
    if available < data_len {
        return Err(err!(
            InvalidAdapter,
            "not a complete GGUF file: its tensor data needs {data_len} bytes from byte {data_start}, but the file ends at byte {}",
            bytes.len()
        ));
    }
    Ok(GgufFile { metadata, tensors, data_section: &bytes[data_start..] })
}

/// Reads little-endian values, naming the section it is in when the bytes run out.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    section: &'static str,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&end| end <= self.bytes.len()).ok_or_else(|| {
            err!(
                InvalidAdapter,
                "not a complete GGUF file: it ends at byte {}, inside the {}",
                self.bytes.len(),
                self.section
            )
        })?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("take returns N bytes"))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<String> {
        let len = self.u64()?;
        let bytes = self.take(usize::try_from(len).unwrap_or(usize::MAX))?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| err!(InvalidAdapter, "a GGUF string in the {} is not UTF-8", self.section))
    }

    fn value(&mut self, type_code: u32, key: &str) -> Result<GgufValue> {
        Ok(match type_code {
            0 => GgufValue::U8(u8::from_le_bytes(self.array()?)),
            1 => GgufValue::I8(i8::from_le_bytes(self.array()?)),
            2 => GgufValue::U16(u16::from_le_bytes(self.array()?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.array()?)),
            4 => GgufValue::U32(self.u32()?),
            5 => GgufValue::I32(i32::from_le_bytes(self.array()?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.array()?)),
            7 => match self.array::<1>()? {
                [0] => GgufValue::Bool(false),
                [1] => GgufValue::Bool(true),
                [other] => {
                    return Err(err!(InvalidAdapter, "GGUF metadata \"{key}\": {other} is not a boolean (0 or 1)"));
                }
            },
            8 => GgufValue::String(self.string()?),
            9 => {
                let element_type = self.u32()?;
                if element_type == 9 {
                    return Err(err!(InvalidAdapter, "GGUF metadata \"{key}\": arrays of arrays are not supported"));
                }
                let count = self.u64()?;
                // Every element takes at least one byte: a count beyond the file is truncation.
                let mut items = Vec::new();
                for _ in 0..count {
                    items.push(self.value(element_type, key)?);
                }
                GgufValue::Array { element_type, items }
            }
            10 => GgufValue::U64(self.u64()?),
            11 => GgufValue::I64(i64::from_le_bytes(self.array()?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array()?)),
            other => return Err(err!(InvalidAdapter, "GGUF metadata \"{key}\" has unknown value type {other}")),
        })
    }
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
    fn encoded_files_read_back_with_aligned_data() {
        let metadata = [
            ("general.architecture", GgufValue::String("llama".into())),
            ("flag", GgufValue::Bool(true)),
            ("tokens", GgufValue::Array { element_type: 4, items: vec![GgufValue::U32(7), GgufValue::U32(9)] }),
            ("empty", GgufValue::Array { element_type: 8, items: vec![] }),
            ("neg", GgufValue::I64(-3)),
        ];
        let tensors = [
            F32Tensor { name: "x.lora_a".into(), shape: [1, 3], data: vec![1.0, 2.0, 3.0] },
            F32Tensor { name: "x.lora_b".into(), shape: [2, 1], data: vec![-1.0, 0.5] },
        ];
        let bytes = encode(&metadata, &tensors);
        assert_eq!(bytes.len() % DEFAULT_ALIGNMENT, 0);
        let file = read_gguf(&bytes).unwrap();
        for (key, value) in &metadata {
            assert_eq!(&file.metadata[*key], value);
        }
        assert_eq!(
            file.tensors[0],
            GgufTensorInfo { name: "x.lora_a".into(), dims: vec![3, 1], ggml_type: GGML_TYPE_F32, offset: 0 }
        );
        assert_eq!(file.tensors[1].dims, [1, 2]);
        assert_eq!(file.tensors[1].offset, DEFAULT_ALIGNMENT as u64);
        assert_eq!(file.tensor_f32("x.lora_b").unwrap(), [-1.0, 0.5]);
        assert_eq!(file.tensor_f32("nope").unwrap_err().code, crate::ErrorCode::InvalidAdapter);
    }

    #[test]
    fn inconsistent_files_are_rejected() {
        let message = |bytes: &[u8]| read_gguf(bytes).unwrap_err().message;
        let odd_alignment = encode(&[("general.alignment", GgufValue::U32(24))], &[]);
        assert!(message(&odd_alignment).contains("power of two"));

        let duplicate = encode(&[("k", GgufValue::U8(1)), ("k", GgufValue::U8(2))], &[]);
        assert!(message(&duplicate).contains("appears twice"));

        let mut version_2 = encode(&[], &[]);
        version_2[4] = 2;
        assert!(message(&version_2).contains("version 2"));
    }
}
