//! Reading model weights from safetensors files (single or sharded) onto the GPU.
//!
//! The architecture first declares every tensor it needs with the shape `config.json` implies
//! ([`WeightSpec`]); the files are then read one at a time, so peak host memory is one shard plus
//! one tensor converted to f32. Anything wrong is reported with the file and tensor name.

use std::collections::{BTreeMap, HashMap};

use burn::tensor::{Device, Tensor, TensorData};
use safetensors::{Dtype, SafeTensorError, SafeTensors};

use crate::err;
use crate::error::{Error, ErrorCode, Result};
use crate::model::files::FileSource;

pub const SINGLE_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// The tensors an architecture needs: HF name (as in the model's module tree) and shape.
#[derive(Default)]
pub struct WeightSpec {
    entries: BTreeMap<String, Vec<usize>>,
    /// A prefix that checkpoints may omit (GPT-2 hub files lack `transformer.`).
    optional_prefix: Option<&'static str>,
}

impl WeightSpec {
    pub fn with_optional_prefix(prefix: &'static str) -> Self {
        WeightSpec { entries: BTreeMap::new(), optional_prefix: Some(prefix) }
    }

    pub fn add(&mut self, name: impl Into<String>, shape: &[usize]) {
        self.entries.insert(name.into(), shape.to_vec());
    }

    /// The spec name a file key stands for, if the architecture needs it.
    fn resolve<'a>(&'a self, key: &str) -> Option<(&'a String, &'a Vec<usize>)> {
        if let Some(entry) = self.entries.get_key_value(key) {
            return Some(entry);
        }
        let prefix = self.optional_prefix?;
        self.entries.get_key_value(&format!("{prefix}{key}"))
    }
}

/// Tensors loaded onto the device, taken out by name while the model is assembled.
pub struct Weights {
    tensors: HashMap<String, Tensor<1>>,
    shapes: BTreeMap<String, Vec<usize>>,
}

impl Weights {
    /// Takes a tensor out with rank `D`; the spec guarantees it exists with this shape.
    pub fn take<const D: usize>(&mut self, name: &str) -> Tensor<D> {
        let shape = &self.shapes[name];
        let shape: [usize; D] = shape.as_slice().try_into().unwrap_or_else(|_| panic!("{name}: spec rank is not {D}"));
        self.tensors.remove(name).unwrap_or_else(|| panic!("{name} taken twice")).reshape(shape)
    }
}

/// Reads every tensor of `spec` from the model's safetensors files in `source`.
pub fn load_weights(source: &dyn FileSource, spec: &WeightSpec, device: &Device) -> Result<Weights> {
    let files = weight_files(source)?;
    let mut tensors = HashMap::new();
    for file in &files {
        let bytes = source.read(file)?;
        read_file(file, &bytes, spec, device, &mut tensors)?;
    }
    let missing: Vec<&String> = spec.entries.keys().filter(|name| !tensors.contains_key(*name)).collect();
    if let Some(first) = missing.first() {
        let more = if missing.len() > 1 { format!(" (and {} more)", missing.len() - 1) } else { String::new() };
        return Err(err!(
            MissingTensor,
            "{} has no tensor \"{first}\"{more}: the weights do not match config.json",
            files.join(", ")
        ));
    }
    Ok(Weights { tensors, shapes: spec.entries.clone() })
}

/// Random weights for every tensor of `spec` (benchmarks): N(0, 0.02) matrices, norm weights 1,
/// biases 0, like transformers' `_init_weights`.
pub fn random_weights(spec: &WeightSpec, device: &Device) -> Weights {
    use burn::tensor::Distribution;
    let tensors = spec
        .entries
        .iter()
        .map(|(name, shape)| {
            let count: usize = shape.iter().product();
            let tensor = match (shape.len(), name.ends_with(".bias")) {
                (1, true) => Tensor::zeros([count], device),
                (1, false) => Tensor::ones([count], device),
                _ => Tensor::random([count], Distribution::Normal(0.0, 0.02), device),
            };
            (name.clone(), tensor)
        })
        .collect();
    Weights { tensors, shapes: spec.entries.clone() }
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
    let index: serde_json::Value =
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

fn read_file(
    file: &str,
    bytes: &[u8],
    spec: &WeightSpec,
    device: &Device,
    out: &mut HashMap<String, Tensor<1>>,
) -> Result<()> {
    let tensors = SafeTensors::deserialize(bytes).map_err(|e| corrupt(file, e))?;
    for (key, view) in tensors.iter() {
        let Some((name, shape)) = spec.resolve(key) else { continue };
        if view.shape() != shape.as_slice() {
            return Err(err!(
                ShapeMismatch,
                "{file}: tensor \"{key}\" has shape {:?} but config.json implies {:?}",
                view.shape(),
                shape
            ));
        }
        let values = to_f32(view.dtype(), view.data()).map_err(|dtype| {
            err!(CorruptWeights, "{file}: tensor \"{key}\" has dtype {dtype:?}; webtune reads F32, F16, BF16 and F64")
        })?;
        let count = values.len();
        out.insert(name.clone(), Tensor::from_data(TensorData::new(values, [count]), device));
    }
    Ok(())
}

fn corrupt(file: &str, e: SafeTensorError) -> Error {
    let why = match e {
        SafeTensorError::MetadataIncompleteBuffer | SafeTensorError::HeaderTooLarge => {
            "the file is truncated (its header lists more data than the file holds); download it again".to_owned()
        }
        SafeTensorError::HeaderTooSmall | SafeTensorError::InvalidHeaderLength => {
            "the file is too short to be safetensors (truncated or not a safetensors file)".to_owned()
        }
        SafeTensorError::InvalidHeader(_) | SafeTensorError::InvalidHeaderDeserialization(_) => {
            "its header is not valid safetensors JSON (corrupt or not a safetensors file)".to_owned()
        }
        SafeTensorError::InvalidOffset(name) => format!("tensor \"{name}\" has invalid data offsets (corrupt file)"),
        other => format!("corrupt safetensors data: {other}"),
    };
    Error::new(ErrorCode::CorruptWeights, format!("{file}: {why}"))
}

/// Converts raw little-endian tensor bytes to f32; returns the dtype back when unsupported.
fn to_f32(dtype: Dtype, data: &[u8]) -> std::result::Result<Vec<f32>, Dtype> {
    Ok(match dtype {
        Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::F16 => data.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::BF16 => data.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::F64 => data.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32).collect(),
        other => return Err(other),
    })
}

/// Reads every tensor of one safetensors file into host memory as f32 (adapters, checkpoints).
pub fn read_host_tensors(file: &str, bytes: &[u8]) -> Result<BTreeMap<String, HostTensor>> {
    let tensors = SafeTensors::deserialize(bytes).map_err(|e| corrupt(file, e))?;
    let mut out = BTreeMap::new();
    for (key, view) in tensors.iter() {
        let data = to_f32(view.dtype(), view.data())
            .map_err(|dtype| err!(CorruptWeights, "{file}: tensor \"{key}\" has unsupported dtype {dtype:?}"))?;
        out.insert(key.to_owned(), HostTensor { shape: view.shape().to_vec(), data });
    }
    Ok(out)
}

/// A tensor in host memory: row-major f32 values and their shape.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Encodes f32 tensors as a safetensors file (keys sorted, as PEFT writes them).
pub fn encode_safetensors(
    tensors: &BTreeMap<String, HostTensor>,
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Vec<u8> {
    let bytes: Vec<(&String, Vec<u8>)> =
        tensors.iter().map(|(name, t)| (name, t.data.iter().flat_map(|v| v.to_le_bytes()).collect())).collect();
    let views = bytes.iter().zip(tensors.values()).map(|((name, data), t)| {
        (
            name.as_str(),
            safetensors::tensor::TensorView::new(Dtype::F32, t.shape.clone(), data).expect("shape matches data"),
        )
    });
    safetensors::serialize(views, metadata).expect("tensor names and shapes are valid")
}
