//! The headers of a model's safetensors files, read without their data: what tensors exist, with
//! which dtype and shape, in which file and where. Everything a header says is bounded and checked
//! against the file's size, so that a config and its weights can be compared before anything
//! large is read or allocated. Format (safetensors `README`): an 8-byte little-endian header
//! length `n`, `n` bytes of JSON `{name: {"dtype", "shape", "data_offsets": [begin, end]}}`
//! (offsets relative to the data that follows), then the data.

use std::collections::BTreeMap;

use safetensors::Dtype;
use serde_json::Value;

use crate::err;
use crate::error::Result;
use crate::model::files::FileSource;

pub const SINGLE_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// Largest header accepted (the safetensors crate's own limit).
const MAX_HEADER_BYTES: u64 = 100_000_000;
/// Largest tensor rank accepted.
const MAX_RANK: usize = 8;

/// One tensor as its file's header describes it.
#[derive(Clone, Debug)]
pub struct TensorHeader {
    pub file: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Byte offset of the data from the start of the file.
    pub offset: u64,
    pub bytes: u64,
}

impl TensorHeader {
    pub fn elements(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }
}

/// Every tensor of a model folder's safetensors files (single or sharded), by key.
pub struct Headers {
    pub files: Vec<String>,
    pub tensors: BTreeMap<String, TensorHeader>,
}

impl Headers {
    /// Reads the header of each weight file of `source`.
    pub fn read(source: &dyn FileSource) -> Result<Self> {
        let files = weight_files(source)?;
        let mut tensors = BTreeMap::new();
        for file in &files {
            for (key, header) in read_header(source, file)? {
                if let Some(other) = tensors.get(&key).map(|t: &TensorHeader| t.file.clone()) {
                    return Err(err!(CorruptWeights, "tensor \"{key}\" is in both {other} and {file}"));
                }
                tensors.insert(key, header);
            }
        }
        Ok(Headers { files, tensors })
    }

    /// Number of decoder layers the keys name (`model.layers.{i}.`, `transformer.h.{i}.`, `h.{i}.`):
    /// one more than the largest index, 0 when none does.
    pub fn layer_count(&self) -> usize {
        self.tensors.keys().filter_map(|key| layer_index(key)).map(|i| i + 1).max().unwrap_or(0)
    }
}

/// The layer index in a tensor key, if it has one.
fn layer_index(key: &str) -> Option<usize> {
    let rest = key
        .strip_prefix("model.layers.")
        .or_else(|| key.strip_prefix("transformer.h."))
        .or_else(|| key.strip_prefix("h."))?;
    rest.split('.').next()?.parse().ok()
}

/// The safetensors files of a model folder: the single file, or the shards of the index.
pub(crate) fn weight_files(source: &dyn FileSource) -> Result<Vec<String>> {
    if source.exists(SINGLE_FILE) {
        return Ok(vec![SINGLE_FILE.to_owned()]);
    }
    if !source.exists(INDEX_FILE) {
        return Err(err!(
            FileMissing,
            "{}: neither {SINGLE_FILE} nor {INDEX_FILE} is present (only safetensors weights are supported)",
            source.describe()
        ));
    }
    let text = source.read_text(INDEX_FILE)?;
    let index: Value =
        serde_json::from_str(&text).map_err(|e| err!(CorruptWeights, "{INDEX_FILE} is not valid JSON: {e}"))?;
    let map = index
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| err!(CorruptWeights, "{INDEX_FILE} has no \"weight_map\" object"))?;
    let mut files: Vec<String> = Vec::new();
    for (tensor, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| err!(CorruptWeights, "{INDEX_FILE}: the shard of \"{tensor}\" is not a file name"))?;
        if !files.iter().any(|f| f == file) {
            files.push(file.to_owned());
        }
    }
    files.sort();
    for file in &files {
        if !source.exists(file) {
            return Err(err!(FileMissing, "{}: shard {file} listed in {INDEX_FILE} is missing", source.describe()));
        }
    }
    Ok(files)
}

/// The tensors listed in one file's header, checked against the file's size.
fn read_header(source: &dyn FileSource, file: &str) -> Result<Vec<(String, TensorHeader)>> {
    let size = source.size(file)?;
    if size < 8 {
        return Err(err!(
            CorruptWeights,
            "{file}: the file is too short to be safetensors (truncated or not a safetensors file)"
        ));
    }
    let length = u64::from_le_bytes(source.read_range(file, 0, 8)?.try_into().expect("8 bytes"));
    if length > MAX_HEADER_BYTES || length > size - 8 {
        return Err(err!(
            CorruptWeights,
            "{file}: the header claims {length} bytes but the file holds {size}; the file is truncated or not safetensors"
        ));
    }
    let text = source.read_range(file, 8, length as usize)?;
    let header: serde_json::Map<String, Value> = serde_json::from_slice(&text)
        .map_err(|e| err!(CorruptWeights, "{file}: its header is not valid safetensors JSON ({e})"))?;
    let data_start = 8 + length;
    let data_len = size - data_start;
    let mut tensors = Vec::new();
    let mut spans = Vec::new();
    for (key, info) in header {
        if key == "__metadata__" {
            continue;
        }
        let tensor = parse_tensor(file, &key, &info, data_start)?;
        let (begin, end) = (tensor.offset - data_start, tensor.offset - data_start + tensor.bytes);
        if end > data_len {
            return Err(err!(
                CorruptWeights,
                "{file}: the file is truncated (tensor \"{key}\" ends at byte {} of a {size}-byte file); download it again",
                data_start + end
            ));
        }
        spans.push((begin, end, key.clone()));
        tensors.push((key, tensor));
    }
    // Tensors must not overlap (safetensors packs them back to back).
    spans.sort();
    for pair in spans.windows(2) {
        if pair[1].0 < pair[0].1 {
            return Err(err!(
                CorruptWeights,
                "{file}: tensors \"{}\" and \"{}\" overlap (corrupt file)",
                pair[0].2,
                pair[1].2
            ));
        }
    }
    Ok(tensors)
}

fn parse_tensor(file: &str, key: &str, info: &Value, data_start: u64) -> Result<TensorHeader> {
    let bad = |what: &str| err!(CorruptWeights, "{file}: tensor \"{key}\" has {what} (corrupt file)");
    let dtype: Dtype = info
        .get("dtype")
        .and_then(|d| serde_json::from_value(d.clone()).ok())
        .ok_or_else(|| bad("no dtype that safetensors knows"))?;
    let shape: Vec<usize> = info
        .get("shape")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no shape"))?
        .iter()
        .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
        .collect::<Option<_>>()
        .ok_or_else(|| bad("a shape that is not a list of sizes"))?;
    if shape.len() > MAX_RANK {
        return Err(bad("more than 8 dimensions"));
    }
    let offsets = info.get("data_offsets").and_then(Value::as_array).ok_or_else(|| bad("no data_offsets"))?;
    let (Some(begin), Some(end)) = (offsets.first().and_then(Value::as_u64), offsets.get(1).and_then(Value::as_u64))
    else {
        return Err(bad("invalid data_offsets"));
    };
    let bits = shape
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d as u64))
        .and_then(|n| n.checked_mul(dtype.bitsize() as u64))
        .filter(|bits| bits % 8 == 0)
        .ok_or_else(|| bad("a shape too large to address"))?;
    let bytes = bits / 8;
    if offsets.len() != 2 || end < begin || end - begin != bytes {
        return Err(bad(&format!("data_offsets [{begin}, {end}] that do not match its shape {shape:?} and dtype")));
    }
    Ok(TensorHeader { file: file.to_owned(), dtype, shape, offset: data_start + begin, bytes })
}
