//! Reading model weights from safetensors files (single or sharded) onto the device.
//!
//! The architecture first declares every tensor it needs with the shape `config.json` implies
//! ([`WeightSpec`]); [`locate`] finds each in the files' headers and checks dtype and shape before
//! any data is read; [`upload`] then reads one tensor at a time, converts it to the storage width
//! of the [`StoragePlan`] (vectors always f32, matrices f16 or f32) and uploads it, as row blocks
//! for vocabulary tables larger than one binding. Peak host memory is one tensor (two for a
//! packed pair, [`WeightSpec::pack`]).

use std::collections::{BTreeMap, HashMap};

use burn::tensor::{DType, Device, Tensor, TensorData};
use safetensors::{Dtype, SafeTensorError, SafeTensors};

use crate::err;
use crate::error::{Error, ErrorCode, Result};
use crate::model::files::FileSource;
use crate::model::header::{Headers, TensorHeader};
use crate::model::layers::LinearShape;
use crate::model::load::StoragePlan;
use crate::model::table::Table;

pub(crate) use crate::model::header::weight_files;
pub use crate::model::header::{INDEX_FILE, SINGLE_FILE};

/// The tensors an architecture needs: HF name (as in the model's module tree) and shape.
#[derive(Default)]
pub struct WeightSpec {
    entries: BTreeMap<String, SpecEntry>,
    /// A prefix that checkpoints may omit (GPT-2 hub files lack `transformer.`).
    optional_prefix: Option<&'static str>,
    /// The linear layers among the entries, in slot order.
    linears: Vec<LinearShape>,
    /// Pairs of entries stored end to end, by the packed tensor's name.
    packs: BTreeMap<String, [String; 2]>,
}

struct SpecEntry {
    shape: Vec<usize>,
    /// A vocabulary-sized matrix that may be stored as row blocks ([`Table`]).
    table: bool,
}

impl WeightSpec {
    pub fn with_optional_prefix(prefix: &'static str) -> Self {
        WeightSpec { optional_prefix: Some(prefix), ..WeightSpec::default() }
    }

    /// Records a linear layer (its weight is added separately) in the next slot.
    pub fn add_linear(&mut self, linear: LinearShape) {
        let slot = self.linears.len();
        self.linears.push(LinearShape { slot, ..linear });
    }

    /// The linear layers, in slot order.
    pub fn linears(&self) -> &[LinearShape] {
        &self.linears
    }

    /// Each tensor as the header of a checkpoint storing it as `dtype` in `file` would describe
    /// it, with whether it may be split into row blocks: what [`crate::model::load::check_fits`]
    /// reads, known before the checkpoint is.
    pub fn as_headers(&self, dtype: Dtype, file: &str) -> Vec<(&str, TensorHeader, bool)> {
        self.entries
            .iter()
            .map(|(name, entry)| {
                let elements = entry.shape.iter().product::<usize>() as u64;
                let bytes = elements * dtype.bitsize() as u64 / 8;
                let header =
                    TensorHeader { file: file.to_owned(), dtype, shape: entry.shape.clone(), offset: 0, bytes };
                (name.as_str(), header, entry.table)
            })
            .collect()
    }

    /// Number of weights in every tensor.
    pub fn parameters(&self) -> usize {
        self.entries().map(|(_, shape)| shape.iter().product::<usize>()).sum()
    }

    pub fn add(&mut self, name: impl Into<String>, shape: &[usize]) {
        self.entries.insert(name.into(), SpecEntry { shape: shape.to_vec(), table: false });
    }

    /// A `[rows, cols]` matrix read by row or used as an output projection: split into row blocks
    /// when larger than one binding.
    pub fn add_table(&mut self, name: impl Into<String>, shape: [usize; 2]) {
        self.entries.insert(name.into(), SpecEntry { shape: shape.to_vec(), table: true });
    }

    /// Stores the matrices `parts` (entries of equal width) end to end on the device as one
    /// `[rows₁ + rows₂, cols]` tensor named `name` (no checkpoint tensor), taken with
    /// [`Weights::take_packed`]; each part is a view of it, so the weights are stored once.
    /// Parts of different storage widths (one kept f32 under f16 storage) are not packed.
    pub fn pack(&mut self, name: impl Into<String>, parts: [String; 2]) {
        let [first, second] = [&parts[0], &parts[1]].map(|part| &self.entries[part].shape);
        assert!(first.len() == 2 && first[1..] == second[1..], "packed parts {parts:?} differ in width");
        self.packs.insert(name.into(), parts);
    }

    /// The pack `name` is part of, with the pack's name.
    fn pack_of(&self, name: &str) -> Option<(&String, &[String; 2])> {
        self.packs.iter().find(|(_, parts)| parts.iter().any(|part| part == name))
    }

    /// Every tensor's name and shape.
    pub fn entries(&self) -> impl Iterator<Item = (&String, &Vec<usize>)> {
        self.entries.iter().map(|(name, entry)| (name, &entry.shape))
    }

    /// The spec name a file key stands for, if the architecture needs it.
    fn resolve(&self, key: &str) -> Option<&String> {
        if let Some((name, _)) = self.entries.get_key_value(key) {
            return Some(name);
        }
        let prefix = self.optional_prefix?;
        self.entries.get_key_value(&format!("{prefix}{key}")).map(|(name, _)| name)
    }
}

/// Where each tensor of a spec lies in the files, checked against the spec.
pub struct Located {
    /// By spec name.
    pub tensors: BTreeMap<String, TensorHeader>,
}

impl Located {
    /// Every located tensor with its header and whether it may be split into row blocks.
    pub fn with_kinds<'a>(&'a self, spec: &WeightSpec) -> Vec<(&'a str, &'a TensorHeader, bool)> {
        self.tensors.iter().map(|(name, header)| (name.as_str(), header, spec.entries[name].table)).collect()
    }
}

/// Finds every tensor of `spec` in the headers: a missing tensor, a shape other than the config
/// implies, or a dtype webtune cannot read is an error naming the file and the tensor.
pub fn locate(headers: &Headers, spec: &WeightSpec) -> Result<Located> {
    let mut tensors = BTreeMap::new();
    for (key, header) in &headers.tensors {
        let Some(name) = spec.resolve(key) else { continue };
        let shape = &spec.entries[name].shape;
        if &header.shape != shape {
            return Err(err!(
                ShapeMismatch,
                "{}: tensor \"{key}\" has shape {:?} but config.json implies {:?}",
                header.file,
                header.shape,
                shape
            ));
        }
        if !matches!(header.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64) {
            return Err(err!(
                CorruptWeights,
                "{}: tensor \"{key}\" has dtype {:?}; webtune reads F32, F16, BF16 and F64",
                header.file,
                header.dtype
            ));
        }
        tensors.insert(name.clone(), header.clone());
    }
    let missing: Vec<&String> = spec.entries.keys().filter(|name| !tensors.contains_key(*name)).collect();
    if let Some(first) = missing.first() {
        let more = if missing.len() > 1 { format!(" (and {} more)", missing.len() - 1) } else { String::new() };
        return Err(err!(
            MissingTensor,
            "{} has no tensor \"{first}\"{more}: the weights do not match config.json",
            headers.files.join(", ")
        ));
    }
    Ok(Located { tensors })
}

/// Tensors on the device, taken out by name while the model is assembled.
#[derive(Default)]
pub struct Weights {
    /// Row blocks of each tensor (one block unless it is a split table), flattened.
    tensors: HashMap<String, Vec<Tensor<1>>>,
    shapes: BTreeMap<String, (Vec<usize>, usize)>,
    /// Tensors kept in f32 under f16 storage (values beyond f16's range).
    pub kept_f32: Vec<String>,
    /// Tables stored as several row blocks, with their block count.
    pub split: Vec<(String, usize)>,
}

impl Weights {
    /// Takes a tensor out with rank `D`; the spec guarantees it exists with this shape.
    pub fn take<const D: usize>(&mut self, name: &str) -> Tensor<D> {
        let (shape, _) = &self.shapes[name];
        let shape: [usize; D] = shape.as_slice().try_into().unwrap_or_else(|_| panic!("{name}: spec rank is not {D}"));
        let mut blocks = self.tensors.remove(name).unwrap_or_else(|| panic!("{name} taken twice"));
        assert_eq!(blocks.len(), 1, "{name} is a split table; take it with take_table");
        blocks.pop().expect("one block").reshape(shape)
    }

    /// Takes out the tensor of [`WeightSpec::pack`] `name`, if its parts were packed.
    pub fn take_packed(&mut self, name: &str) -> Option<Tensor<2>> {
        self.tensors.contains_key(name).then(|| self.take(name))
    }

    /// Stores `values` (one part's, then the other's) as the pack `name` of `spec`.
    fn insert_packed(&mut self, spec: &WeightSpec, name: &str, values: Tensor<1>) {
        let parts = &spec.packs[name];
        let shapes = parts.each_ref().map(|part| spec.entries[part].shape.as_slice());
        let cols = shapes[0][1];
        let rows = [shapes[0][0], shapes[1][0]];
        let mut start = 0;
        for (part, rows) in parts.iter().zip(rows) {
            let end = start + rows * cols;
            self.insert_blocks(part, &[rows, cols], rows, vec![values.clone().slice(start..end)]);
            start = end;
        }
        let total = rows[0] + rows[1];
        self.insert_blocks(name, &[total, cols], total, vec![values]);
    }

    /// Uploads one tensor of the spec (as row blocks for a table larger than one binding),
    /// noting a matrix kept in f32 under f16 storage.
    fn insert_plain(
        &mut self,
        name: &str,
        entry: &SpecEntry,
        values: &[f32],
        f16: bool,
        plan: &StoragePlan,
        device: &Device,
    ) {
        if plan.f16 && entry.shape.len() >= 2 && !f16 {
            self.kept_f32.push(name.to_owned());
        }
        let (rows, cols) = if entry.table { (entry.shape[0], entry.shape[1]) } else { (1, values.len()) };
        let block_rows = if entry.table { plan.block_rows(rows, cols) } else { 1 };
        let blocks = values.chunks(block_rows * cols).map(|chunk| upload_values(chunk, f16, device)).collect();
        self.insert_blocks(name, &entry.shape, block_rows, blocks);
    }

    /// Stores tensor `name` of `shape` as its row blocks of `block_rows` rows each, noting a
    /// split table.
    fn insert_blocks(&mut self, name: &str, shape: &[usize], block_rows: usize, blocks: Vec<Tensor<1>>) {
        if blocks.len() > 1 {
            self.split.push((name.to_owned(), blocks.len()));
        }
        self.tensors.insert(name.to_owned(), blocks);
        self.shapes.insert(name.to_owned(), (shape.to_vec(), block_rows));
    }

    /// Takes a table (declared with [`WeightSpec::add_table`]) out as its row blocks.
    pub fn take_table(&mut self, name: &str) -> Table {
        let (shape, block_rows) = self.shapes[name].clone();
        let blocks = self.tensors.remove(name).unwrap_or_else(|| panic!("{name} taken twice"));
        let cols = shape[1];
        let blocks = blocks
            .into_iter()
            .map(|b| {
                let rows = b.dims()[0] / cols;
                b.reshape([rows, cols])
            })
            .collect();
        Table::from_blocks(blocks, block_rows)
    }
}

/// Reads every located tensor from `source`, converts it to the plan's storage width and
/// uploads it to `device`.
pub fn upload(
    source: &dyn FileSource,
    located: &Located,
    spec: &WeightSpec,
    plan: &StoragePlan,
    device: &Device,
) -> Result<Weights> {
    let mut weights = Weights::default();
    // The first part of a pack, until its other part is read.
    let mut waiting: HashMap<&str, Vec<f32>> = HashMap::new();
    for (name, header) in &located.tensors {
        let entry = &spec.entries[name];
        let bytes = source.read_range(&header.file, header.offset, header.bytes as usize)?;
        let values = to_f32(header.dtype, &bytes).map_err(|dtype| {
            err!(
                CorruptWeights,
                "{}: tensor \"{name}\" has dtype {dtype:?}; webtune reads F32, F16, BF16 and F64",
                header.file
            )
        })?;
        let matrix = entry.shape.len() >= 2;
        let f16 = |values: &[f32]| {
            plan.f16 && matrix && values.iter().all(|v| v.abs() <= f32::from(half::f16::MAX) || v.is_nan())
        };
        if let Some((pack, parts)) = spec.pack_of(name) {
            let other = if parts[0] == *name { &parts[1] } else { &parts[0] };
            let Some(other_values) = waiting.remove(other.as_str()) else {
                waiting.insert(name, values);
                continue;
            };
            let (fits, other_fits) = (f16(&values), f16(&other_values));
            if fits == other_fits {
                if plan.f16 && !fits {
                    weights.kept_f32.extend(parts.iter().cloned());
                }
                let ordered =
                    if parts[0] == *name { [&values[..], &other_values[..]] } else { [&other_values[..], &values[..]] };
                weights.insert_packed(spec, pack, upload_values(&ordered.concat(), fits, device));
                continue;
            }
            weights.insert_plain(other, &spec.entries[other], &other_values, other_fits, plan, device);
        }
        let fits = f16(&values);
        weights.insert_plain(name, entry, &values, fits, plan, device);
    }
    Ok(weights)
}

/// One tensor's values on the device, in f16 or f32.
fn upload_values(values: &[f32], f16: bool, device: &Device) -> Tensor<1> {
    let n = values.len();
    if f16 {
        let halves: Vec<half::f16> = values.iter().map(|&v| half::f16::from_f32(v)).collect();
        Tensor::from_data(TensorData::new(halves, [n]), (device, DType::F16))
    } else {
        Tensor::from_data(TensorData::new(values.to_vec(), [n]), (device, DType::F32))
    }
}

/// Random weights for every tensor of `spec` (benchmarks): N(0, 0.02) matrices, norm weights 1,
/// biases 0, like transformers' `_init_weights`, at the plan's storage width.
pub fn random_weights(spec: &WeightSpec, plan: &StoragePlan, device: &Device) -> Weights {
    use burn::tensor::Distribution;
    let mut weights = Weights::default();
    for (pack, parts) in &spec.packs {
        let count = parts.iter().map(|part| spec.entries[part].shape.iter().product::<usize>()).sum::<usize>();
        let dtype = if plan.f16 { DType::F16 } else { DType::F32 };
        let values = Tensor::random([count], Distribution::Normal(0.0, 0.02), (device, dtype));
        weights.insert_packed(spec, pack, values);
    }
    for (name, entry) in &spec.entries {
        if spec.pack_of(name).is_some() {
            continue;
        }
        let count: usize = entry.shape.iter().product();
        let (rows, cols) = if entry.table { (entry.shape[0], entry.shape[1]) } else { (1, count) };
        let block_rows = if entry.table { plan.block_rows(rows, cols) } else { 1 };
        let dtype = if plan.f16 && entry.shape.len() >= 2 { DType::F16 } else { DType::F32 };
        let blocks: Vec<Tensor<1>> = (0..rows)
            .step_by(block_rows)
            .map(|first| {
                let n = block_rows.min(rows - first) * cols;
                match (entry.shape.len(), name.ends_with(".bias")) {
                    (1, true) => Tensor::zeros([n], (device, dtype)),
                    (1, false) => Tensor::ones([n], (device, dtype)),
                    _ => Tensor::random([n], Distribution::Normal(0.0, 0.02), (device, dtype)),
                }
            })
            .collect();
        weights.insert_blocks(name, &entry.shape, block_rows, blocks);
    }
    weights
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
