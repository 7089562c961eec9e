//! Merged export: the adapter folded into the base weights, written as a Hugging Face model folder
//! (`config.json`, the weights in the base's dtype, tokenizer files, `generation_config.json`)
//! that transformers and webtune load as a plain model.
//!
//! Folding, per adapted layer with weight `W [out, in]` (PEFT's `merge` of each method):
//! - LoRA: `W + s·B A` (PiSSA: `W + s·(B A − B₀ A₀)`, the residual base plus the trained factors);
//! - DoRA: `(m / n) ⊙ (W + s·B A)` row-wise, `n` the row norms of the unmerged `W + s·B A`;
//! - IA3: rows of `W` and the bias times `l` (output scaling), or columns of `W` times `l` (input
//!   scaling, feed-forward modules). GPT-2 Conv1D weights are stored `[in, out]` and written back so.
//!
//! The output is produced as a stream of [`MergeChunk`]s (a pull API, so that a browser can write
//! each chunk to disk before asking for the next): the base's safetensors are read tensor by
//! tensor through [`FileSource::read_range`], an adapted tensor is recomputed on the device from
//! the loaded weights (exact: F16/BF16 widen to F32 exactly) and narrowed back to the file's dtype,
//! and no second copy of the weights is ever held. Above `max_shard_bytes` the weights are
//! sharded like transformers' `save_pretrained`: `model-00001-of-0000N.safetensors` plus
//! `model.safetensors.index.json` (`metadata.total_size`, `weight_map`).

use std::collections::HashMap;
use std::sync::Arc;

use burn::tensor::Tensor;
use serde_json::{Map, Value, json};

use crate::err;
use crate::error::Result;
use crate::model::weights::{INDEX_FILE, SINGLE_FILE, weight_files};
use crate::model::{CausalLm, FileSource, Linear, ModelConfig, WeightLayout};
use crate::peft::files::pretty_sorted;
use crate::peft::{Adapter, ExportFormat};
use crate::readback;

/// transformers' shard size for this export (`max_shard_size="2GB"`).
pub const MAX_SHARD_BYTES: u64 = 2_000_000_000;

/// Files copied unchanged from the base folder when present.
const COPIED_FILES: [&str; 10] = [
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
];

/// Consecutive bytes of one output file. Files come one after another, each from offset 0 to
/// `file_len` in order, so a consumer opens a file at offset 0 and closes it at `file_len`.
pub struct MergeChunk {
    pub file: String,
    pub offset: u64,
    pub file_len: u64,
    pub bytes: Vec<u8>,
}

/// What changes in a base tensor: the weight or the bias of the linear layer in a slot.
#[derive(Clone, Copy, Debug)]
enum Edit {
    Weight(usize),
    Bias(usize),
}

/// A tensor of the base's safetensors files: where its bytes are and what the merge does to it.
struct SourceTensor {
    name: String,
    file: String,
    offset: u64,
    len: usize,
    dtype: String,
    shape: Vec<usize>,
    edit: Option<Edit>,
}

enum Part {
    Bytes(Vec<u8>),
    Tensor(SourceTensor),
}

struct OutputFile {
    name: String,
    len: u64,
    parts: Vec<Part>,
}

/// A merged model being written: plan it with [`MergedModel::new`], then drain
/// [`MergedModel::next_chunk`] until it returns `None`.
pub struct MergedModel {
    lm: Arc<CausalLm>,
    adapter: Adapter,
    source: Box<dyn FileSource>,
    files: Vec<OutputFile>,
    /// Position of the next chunk: file, part, and byte offset within the file.
    file: usize,
    part: usize,
    offset: u64,
}

impl MergedModel {
    /// Plans the output for `adapter` trained on `lm`, whose files `source` holds. Everything that
    /// can be wrong (method, base folder, dtypes) is checked here, before any byte is produced.
    pub fn new(lm: Arc<CausalLm>, adapter: Adapter, source: Box<dyn FileSource>, max_shard_bytes: u64) -> Result<Self> {
        if !adapter.export_formats().contains(&ExportFormat::Merged) {
            return Err(err!(
                InvalidOptions,
                "a {} adapter cannot be folded into the base weights ({}); export its adapter files instead",
                adapter.method(),
                match adapter {
                    Adapter::Bottleneck(_) => "it adds a small network with a non-linearity between the layers",
                    _ => "it adds virtual tokens to every input",
                }
            ));
        }
        let base_config = ModelConfig::from_json(&source.read_text("config.json")?)?;
        if base_config != lm.config {
            return Err(err!(
                InvalidOptions,
                "{}: config.json describes another model than the one the adapter was trained on",
                source.describe()
            ));
        }
        let mut edits = edits(&lm, &adapter);
        let mut tensors = Vec::new();
        for file in weight_files(source.as_ref())? {
            tensors.extend(read_header(source.as_ref(), &file)?);
        }
        for t in &mut tensors {
            t.edit = take_edit(&mut edits, &t.name);
            if let Some(edit) = t.edit {
                check_edited(t, &lm.linears()[edit.slot()], edit)?;
            }
        }
        if let Some(missing) = edits.keys().next() {
            return Err(err!(
                MissingTensor,
                "{} has no tensor \"{missing}\", which the adapter changes",
                source.describe()
            ));
        }
        let mut files = Vec::new();
        for name in ["config.json"].into_iter().chain(COPIED_FILES) {
            if source.exists(name) {
                let bytes = source.read(name)?;
                files.push(OutputFile {
                    name: name.to_owned(),
                    len: bytes.len() as u64,
                    parts: vec![Part::Bytes(bytes)],
                });
            }
        }
        files.extend(weight_shards(tensors, max_shard_bytes));
        Ok(MergedModel { lm, adapter, source, files, file: 0, part: 0, offset: 0 })
    }

    /// The files this export writes, with their sizes in bytes.
    pub fn files(&self) -> Vec<(&str, u64)> {
        self.files.iter().map(|f| (f.name.as_str(), f.len)).collect()
    }

    /// The next piece of output (a header, one tensor, or a small file), `None` when done.
    pub async fn next_chunk(&mut self) -> Result<Option<MergeChunk>> {
        let MergedModel { lm, adapter, source, files, file, part, offset } = self;
        while let Some(current) = files.get_mut(*file) {
            let Some(next) = current.parts.get_mut(*part) else {
                (*file, *part, *offset) = (*file + 1, 0, 0);
                continue;
            };
            let bytes = match next {
                Part::Bytes(bytes) => std::mem::take(bytes),
                Part::Tensor(t) => tensor_bytes(lm, adapter, source.as_ref(), t).await?,
            };
            let chunk = MergeChunk { file: current.name.clone(), offset: *offset, file_len: current.len, bytes };
            *offset += chunk.bytes.len() as u64;
            *part += 1;
            return Ok(Some(chunk));
        }
        Ok(None)
    }
}

/// A tensor's bytes in the output: copied, or recomputed with the adapter folded in.
async fn tensor_bytes(lm: &CausalLm, adapter: &Adapter, source: &dyn FileSource, t: &SourceTensor) -> Result<Vec<u8>> {
    let Some(edit) = t.edit else {
        return source.read_range(&t.file, t.offset, t.len);
    };
    let linear = &lm.linears()[edit.slot()];
    let values = match edit {
        Edit::Weight(_) => {
            let merged = merged_weight(adapter, linear);
            let stored = match linear.layout {
                WeightLayout::OutIn => merged,
                WeightLayout::InOut => merged.transpose(),
            };
            readback::floats(stored).await?
        }
        Edit::Bias(_) => readback::floats(merged_bias(adapter, linear)).await?,
    };
    encode(&values, &t.dtype, &t.name)
}

impl Edit {
    fn slot(self) -> usize {
        match self {
            Edit::Weight(slot) | Edit::Bias(slot) => slot,
        }
    }
}

/// The base tensors the adapter changes, by their full HF names.
fn edits(lm: &CausalLm, adapter: &Adapter) -> HashMap<String, Edit> {
    let mut edits = HashMap::new();
    let mut weight = |slot: usize| {
        edits.insert(format!("{}.weight", lm.linears()[slot].path), Edit::Weight(slot));
    };
    match adapter {
        Adapter::Lora(l) => l.modules.iter().for_each(|m| weight(m.slot)),
        Adapter::Ia3(a) => {
            a.modules.iter().for_each(|m| weight(m.slot));
            for m in a.modules.iter().filter(|m| !m.feedforward && lm.linears()[m.slot].has_bias()) {
                edits.insert(format!("{}.bias", m.path), Edit::Bias(m.slot));
            }
        }
        Adapter::Prompt(_) | Adapter::Bottleneck(_) => {}
    }
    edits
}

/// The edit of the file tensor `name`: by its full name, or by a suffix for checkpoints that omit
/// a prefix the model adds (GPT-2 hub files lack `transformer.`).
fn take_edit(edits: &mut HashMap<String, Edit>, name: &str) -> Option<Edit> {
    if let Some(edit) = edits.remove(name) {
        return Some(edit);
    }
    let suffix = format!(".{name}");
    let full = edits.keys().find(|k| k.ends_with(&suffix))?.clone();
    edits.remove(&full)
}

/// An edited tensor must have the layer's stored shape and a float dtype the merge can write.
fn check_edited(t: &SourceTensor, linear: &Linear, edit: Edit) -> Result<()> {
    let expected = match (edit, linear.layout) {
        (Edit::Bias(_), _) => vec![linear.out_features],
        (Edit::Weight(_), WeightLayout::OutIn) => vec![linear.out_features, linear.in_features],
        (Edit::Weight(_), WeightLayout::InOut) => vec![linear.in_features, linear.out_features],
    };
    if t.shape != expected {
        return Err(err!(
            ShapeMismatch,
            "{}: tensor \"{}\" has shape {:?}, but the loaded model's is {expected:?}",
            t.file,
            t.name,
            t.shape
        ));
    }
    if !matches!(t.dtype.as_str(), "F32" | "F16" | "BF16" | "F64") {
        return Err(err!(
            CorruptWeights,
            "{}: tensor \"{}\" has dtype {}; a merge writes F32, F16, BF16 or F64 weights",
            t.file,
            t.name,
            t.dtype
        ));
    }
    Ok(())
}

/// The tensors listed in a safetensors file's header (8-byte little-endian length, then JSON).
fn read_header(source: &dyn FileSource, file: &str) -> Result<Vec<SourceTensor>> {
    let corrupt = |why: &str| err!(CorruptWeights, "{file}: {why}");
    let len = u64::from_le_bytes(source.read_range(file, 0, 8)?.try_into().expect("8 bytes"));
    if len > 100_000_000 {
        return Err(corrupt("its header length is implausible (not a safetensors file?)"));
    }
    let header: Value = serde_json::from_slice(&source.read_range(file, 8, len as usize)?)
        .map_err(|e| corrupt(&format!("its header is not valid JSON: {e}")))?;
    let entries = header.as_object().ok_or_else(|| corrupt("its header is not a JSON object"))?;
    let data_start = 8 + len;
    let mut tensors = Vec::new();
    for (name, info) in entries.iter().filter(|(name, _)| *name != "__metadata__") {
        let bad = || corrupt(&format!("tensor \"{name}\" has a malformed header entry"));
        let dtype = info["dtype"].as_str().ok_or_else(bad)?.to_owned();
        let shape: Vec<usize> = info["shape"]
            .as_array()
            .and_then(|s| s.iter().map(|d| d.as_u64().map(|d| d as usize)).collect())
            .ok_or_else(bad)?;
        let offsets: Vec<u64> =
            info["data_offsets"].as_array().and_then(|o| o.iter().map(Value::as_u64).collect()).ok_or_else(bad)?;
        let [begin, end] = offsets[..] else { return Err(bad()) };
        if end < begin {
            return Err(bad());
        }
        tensors.push(SourceTensor {
            name: name.clone(),
            file: file.to_owned(),
            offset: data_start + begin,
            len: (end - begin) as usize,
            dtype,
            shape,
            edit: None,
        });
    }
    Ok(tensors)
}

/// Bytes per element, for ordering tensors by alignment as the safetensors writer does.
fn dtype_size(dtype: &str) -> usize {
    match dtype {
        "F64" | "I64" | "U64" => 8,
        "F32" | "I32" | "U32" => 4,
        "F16" | "BF16" | "I16" | "U16" => 2,
        _ => 1,
    }
}

/// The weights as one `model.safetensors`, or as shards of at most `max_bytes` (a larger tensor
/// gets a shard of its own) plus the index, in tensor-name order.
fn weight_shards(mut tensors: Vec<SourceTensor>, max_bytes: u64) -> Vec<OutputFile> {
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    let mut shards: Vec<Vec<SourceTensor>> = Vec::new();
    let mut size = 0u64;
    for t in tensors {
        let len = t.len as u64;
        match shards.last_mut() {
            Some(shard) if size + len <= max_bytes => shard.push(t),
            _ => {
                size = 0;
                shards.push(vec![t]);
            }
        }
        size += len;
    }
    if shards.is_empty() {
        shards.push(Vec::new());
    }
    let count = shards.len();
    let total: u64 = shards.iter().flatten().map(|t| t.len as u64).sum();
    let mut weight_map = Map::new();
    let mut files = Vec::new();
    for (i, mut shard) in shards.into_iter().enumerate() {
        let name =
            if count == 1 { SINGLE_FILE.to_owned() } else { format!("model-{:05}-of-{count:05}.safetensors", i + 1) };
        shard.sort_by(|a, b| dtype_size(&b.dtype).cmp(&dtype_size(&a.dtype)).then_with(|| a.name.cmp(&b.name)));
        let header = safetensors_header(&shard);
        let len = header.len() as u64 + shard.iter().map(|t| t.len as u64).sum::<u64>();
        for t in &shard {
            weight_map.insert(t.name.clone(), json!(name));
        }
        let parts = std::iter::once(Part::Bytes(header)).chain(shard.into_iter().map(Part::Tensor)).collect();
        files.push(OutputFile { name, len, parts });
    }
    if count > 1 {
        let index = json!({ "metadata": { "total_size": total }, "weight_map": weight_map });
        let bytes = (pretty_sorted(&index) + "\n").into_bytes();
        files.push(OutputFile {
            name: INDEX_FILE.to_owned(),
            len: bytes.len() as u64,
            parts: vec![Part::Bytes(bytes)],
        });
    }
    files
}

/// The 8-byte length and JSON header of a safetensors file holding `tensors` in this order,
/// padded with spaces to a multiple of 8 bytes, with transformers' `{"format": "pt"}` metadata.
fn safetensors_header(tensors: &[SourceTensor]) -> Vec<u8> {
    let mut entries = Map::new();
    entries.insert("__metadata__".into(), json!({ "format": "pt" }));
    let mut offset = 0u64;
    for t in tensors {
        let end = offset + t.len as u64;
        entries.insert(t.name.clone(), json!({ "dtype": t.dtype, "shape": t.shape, "data_offsets": [offset, end] }));
        offset = end;
    }
    let mut json = serde_json::to_vec(&Value::Object(entries)).expect("JSON values serialise");
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend(json);
    out
}

/// Row-major f32 values narrowed to a safetensors float dtype (round to nearest even).
fn encode(values: &[f32], dtype: &str, name: &str) -> Result<Vec<u8>> {
    Ok(match dtype {
        "F32" => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        "F16" => values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect(),
        "BF16" => values.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect(),
        "F64" => values.iter().flat_map(|v| (*v as f64).to_le_bytes()).collect(),
        other => return Err(err!(CorruptWeights, "tensor \"{name}\" has dtype {other}, which a merge cannot write")),
    })
}

/// `linear`'s weight `[out, in]` with the adapter folded in.
fn merged_weight(adapter: &Adapter, linear: &Linear) -> Tensor<2> {
    let w = linear.weight_out_in();
    let out = linear.out_features;
    match adapter {
        Adapter::Lora(l) => {
            let Some(m) = l.modules.iter().find(|m| m.slot == linear.slot) else { return w };
            let mut product = m.b.clone().matmul(m.a.clone());
            if let Some((a0, b0)) = &m.pissa_initial {
                product = product - b0.clone().matmul(a0.clone());
            }
            let merged = w + product * m.scale;
            match &m.magnitude {
                Some(magnitude) => merged * (magnitude.clone() / m.weight_norm(linear)).reshape([out, 1]),
                None => merged,
            }
        }
        Adapter::Ia3(a) => match a.modules.iter().find(|m| m.slot == linear.slot) {
            Some(m) if m.feedforward => w * m.row(),
            Some(m) => w * m.row().reshape([out, 1]),
            None => w,
        },
        Adapter::Prompt(_) | Adapter::Bottleneck(_) => w,
    }
}

/// `linear`'s bias with the adapter folded in (IA3 output scaling scales it).
fn merged_bias(adapter: &Adapter, linear: &Linear) -> Tensor<1> {
    let bias = linear.bias().expect("only layers with a bias get a bias edit").clone();
    match adapter {
        Adapter::Ia3(a) => match a.modules.iter().find(|m| m.slot == linear.slot && !m.feedforward) {
            Some(m) => bias * m.row().reshape([linear.out_features]),
            None => bias,
        },
        _ => bias,
    }
}

/// Writes the merged model into `out`, which must not exist or be empty: nothing is overwritten.
/// Each file is written as `<name>.partial` and renamed when complete; on an error every file
/// this call created is removed.
#[cfg(not(target_arch = "wasm32"))]
pub async fn write_folder(mut merged: MergedModel, out: &std::path::Path) -> Result<()> {
    use std::io::Write;
    let occupied = std::fs::read_dir(out).map(|mut entries| entries.next().is_some()).unwrap_or(false);
    if occupied {
        return Err(err!(
            InvalidOptions,
            "{} is not empty; a merged model is written only into a new or empty folder (nothing was changed)",
            out.display()
        ));
    }
    std::fs::create_dir_all(out).map_err(|e| err!(Io, "cannot create {}: {e}", out.display()))?;
    let mut created: Vec<std::path::PathBuf> = Vec::new();
    let result: Result<()> = async {
        let mut current: Option<(std::fs::File, std::path::PathBuf)> = None;
        while let Some(chunk) = merged.next_chunk().await? {
            let target = out.join(&chunk.file);
            let partial = out.join(format!("{}.partial", chunk.file));
            let io = |e: std::io::Error| err!(Io, "cannot write {}: {e}", partial.display());
            if chunk.offset == 0 {
                created.push(partial.clone());
                current = Some((std::fs::File::create(&partial).map_err(io)?, target.clone()));
            }
            let (file, _) = current.as_mut().expect("a file is open at offset > 0");
            file.write_all(&chunk.bytes).map_err(io)?;
            if chunk.offset + chunk.bytes.len() as u64 == chunk.file_len {
                let (file, target) = current.take().expect("open file");
                file.sync_all().map_err(io)?;
                std::fs::rename(&partial, &target).map_err(io)?;
                created.push(target);
            }
        }
        Ok(())
    }
    .await;
    if result.is_err() {
        for path in &created {
            let _ = std::fs::remove_file(path);
        }
    }
    result
}
