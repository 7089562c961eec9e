//! A strict reader of GGUF files (version 3, F32 tensors), independent of webtune's writer, to
//! check what `webtune::peft::gguf` writes as llama.cpp reads it. Layout (`gguf-py/gguf/gguf_writer.py`,
//! `ggml/src/gguf.cpp`): little-endian; magic `GGUF`, version (u32), tensor count and KV count (u64);
//! each KV as key (u64 length + UTF-8), value type (u32), value (arrays: element type u32, count
//! u64, elements); each tensor info as name, n_dims (u32), dims (u64, ggml `ne` order), ggml type
//! (u32) and offset (u64) into the data section; padding to the alignment; the padded tensor data.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use webtune::{Result, err};

const MAGIC: &[u8; 4] = b"GGUF";
const VERSION: u32 = 3;
/// `GGUF_DEFAULT_ALIGNMENT`: used unless `general.alignment` says otherwise.
const DEFAULT_ALIGNMENT: usize = 32;
/// `GGML_MAX_DIMS`.
const MAX_DIMS: usize = 4;
/// The ggml tensor type code of 32-bit floats, the only one read here.
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
    Ok(GgufFile { metadata, tensors, data_section: bytes.get(data_start..).unwrap_or_default() })
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
