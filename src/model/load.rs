//! How a checkpoint is laid out on the device: the storage width of the frozen matrices (f16 or
//! f32) and the row blocks of matrices too large for one binding, decided from the checkpoint's
//! headers and the device's limits before anything is uploaded. A model that cannot fit is
//! refused here, with the limit it exceeds and what to do.

use safetensors::Dtype;

use crate::device::GpuInfo;
use crate::err;
use crate::error::Result;
use crate::model::header::TensorHeader;

/// Storage width of the frozen base's matrices, as the user asks for it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightsDtype {
    /// f16 for an F16 or BF16 checkpoint on a device that computes in f16 (`shader-f16`), else
    /// f32. An F32 checkpoint stays f32.
    #[default]
    Auto,
    /// f16 whatever the checkpoint (half the memory of f32; BF16 values are rounded to f16).
    F16,
    /// f32 whatever the checkpoint.
    F32,
}

impl WeightsDtype {
    /// Parses `auto`, `f16` or `f32` (the CLI's `--weights-dtype`).
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "auto" => Ok(WeightsDtype::Auto),
            "f16" => Ok(WeightsDtype::F16),
            "f32" => Ok(WeightsDtype::F32),
            other => Err(err!(InvalidOptions, "weights dtype \"{other}\" is not auto, f16 or f32")),
        }
    }
}

/// How to load a model onto its device.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LoadOptions {
    pub weights_dtype: WeightsDtype,
    /// Treat the device's storage-binding limit as at most this many bytes (tests of row-block
    /// splitting; a user who wants smaller buffers).
    pub max_binding_bytes: Option<u64>,
    /// The device's capabilities and limits; `None` takes those [`crate::device`] recorded
    /// when it acquired the device.
    #[serde(skip)]
    pub device: Option<GpuInfo>,
}

/// What loading decided, for the page, the package and the CLI to show.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadReport {
    /// `"f16"` or `"f32"`: how the frozen matrices are stored on the device.
    pub weights_dtype: &'static str,
    /// Why that width, in words ("the checkpoint is F32", "… cannot compute in f16 (no
    /// shader-f16) …").
    pub reason: String,
    /// The checkpoint's dtype (of its embedding table): `F32`, `F16`, `BF16`, `F64`.
    pub checkpoint_dtype: String,
    /// Bytes the weights take on the device.
    pub weight_bytes: u64,
    /// Matrices stored as several row blocks because they exceed the binding limit, with the
    /// number of blocks.
    pub split_tables: Vec<(String, usize)>,
    /// Matrices kept in f32 under f16 storage because f16 cannot hold their values (|x| > 65504).
    pub kept_f32: Vec<String>,
}

impl LoadReport {
    /// Bytes per stored matrix weight (norms and biases stay f32 but are a rounding error).
    pub fn bytes_per_weight(&self) -> u64 {
        if self.weights_dtype == "f16" { 2 } else { 4 }
    }

    /// The storage width this model was loaded with, as an option that loads another model so.
    pub fn stored_as(&self) -> WeightsDtype {
        if self.weights_dtype == "f16" { WeightsDtype::F16 } else { WeightsDtype::F32 }
    }
}

/// The decided layout: storage width and the largest tensor one binding may hold.
#[derive(Clone, Debug)]
pub struct StoragePlan {
    pub f16: bool,
    pub reason: String,
    /// Largest binding in bytes (the smaller of the device's binding and buffer limits).
    pub max_binding_bytes: u64,
}

impl StoragePlan {
    /// Rows per block for a `[rows, cols]` table, sized so that a block cast to f32 for use
    /// fits one binding.
    pub fn block_rows(&self, rows: usize, cols: usize) -> usize {
        let fit = (self.max_binding_bytes / (4 * cols as u64).max(1)).max(1);
        rows.min(usize::try_from(fit).unwrap_or(usize::MAX))
    }

    /// Largest number of f32 values one intermediate may hold (logits of a loss chunk).
    pub fn max_elements(&self) -> usize {
        usize::try_from(self.max_binding_bytes / 4).unwrap_or(usize::MAX).max(1)
    }

    /// Bytes a tensor takes on the device.
    pub fn stored_bytes(&self, header: &TensorHeader) -> u64 {
        let width = if self.f16 && header.shape.len() >= 2 { 2 } else { 4 };
        header.elements() * width
    }
}

/// Device limits in effect: the recorded ones, lowered by the options.
pub fn effective_device(options: &LoadOptions, device: &burn::tensor::Device) -> GpuInfo {
    let mut info = options.device.clone().unwrap_or_else(|| crate::device::info_of(device));
    if let Some(cap) = options.max_binding_bytes {
        info.max_storage_buffer_binding_size = info.max_storage_buffer_binding_size.min(cap);
    }
    info
}

/// Decides the storage width for a checkpoint whose embedding table has `checkpoint` dtype.
pub fn plan(options: &LoadOptions, info: &GpuInfo, checkpoint: Dtype) -> Result<StoragePlan> {
    let half = matches!(checkpoint, Dtype::F16 | Dtype::BF16);
    let (f16, reason) = match options.weights_dtype {
        WeightsDtype::F32 => (false, "weightsDtype \"f32\" asked for it".to_owned()),
        WeightsDtype::F16 if !info.shader_f16 => {
            return Err(err!(
                InvalidOptions,
                "weightsDtype \"f16\": {} cannot compute in f16 (no shader-f16); use \"auto\" or \"f32\"",
                info.label()
            ));
        }
        WeightsDtype::F16 => (true, "weightsDtype \"f16\" asked for it".to_owned()),
        WeightsDtype::Auto if !half => (false, format!("the checkpoint is {checkpoint:?}")),
        WeightsDtype::Auto if info.shader_f16 => {
            (true, format!("the checkpoint is {checkpoint:?} and {} computes in f16", info.label()))
        }
        WeightsDtype::Auto => (
            false,
            format!(
                "{} cannot compute in f16 (no shader-f16), so the {checkpoint:?} checkpoint takes twice its size",
                info.label()
            ),
        ),
    };
    let max_binding_bytes = info.max_storage_buffer_binding_size.min(info.max_buffer_size);
    Ok(StoragePlan { f16, reason, max_binding_bytes })
}

/// Refuses a layout the device cannot hold: a matrix that cannot be split (or a row of one that
/// can) larger than one binding, or weights beyond the device's memory. `tensors` are the spec's
/// tensors with their headers, `table` saying which may be split into row blocks.
pub fn check_fits(plan: &StoragePlan, info: &GpuInfo, tensors: &[(&str, &TensorHeader, bool)]) -> Result<u64> {
    let mb = |bytes: u64| bytes as f64 / 1_048_576.0;
    let limit = plan.max_binding_bytes;
    for &(name, header, table) in tensors {
        // Used as f32: the bytes a kernel binds.
        let unit =
            if table { header.shape.iter().skip(1).product::<usize>() as u64 * 4 } else { header.elements() * 4 };
        if unit > limit {
            let what = if table { format!("one row of tensor \"{name}\"") } else { format!("tensor \"{name}\"") };
            return Err(err!(
                Gpu,
                "{}: {what} needs {:.2} MiB in one GPU buffer, more than this device allows ({:.2} MiB: the smaller of maxStorageBufferBindingSize and maxBufferSize of {}); use a smaller model or a GPU with larger limits",
                header.file,
                mb(unit),
                mb(limit),
                info.label()
            ));
        }
    }
    let total: u64 = tensors.iter().map(|(_, header, _)| plan.stored_bytes(header)).sum();
    if let Some(memory) = info.memory_bytes
        && total > memory
    {
        return Err(err!(
            Gpu,
            "the weights need {:.2} GiB stored as {} ({}), more than the {:.2} GiB of {}; use a smaller model{}",
            total as f64 / (1u64 << 30) as f64,
            if plan.f16 { "f16" } else { "f32" },
            plan.reason,
            memory as f64 / (1u64 << 30) as f64,
            info.label(),
            if plan.f16 { "" } else { " or a device with shader-f16" }
        ));
    }
    Ok(total)
}
