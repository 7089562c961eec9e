//! Helpers shared by the integration tests: fixture paths, reading the reference tensors that
//! transformers + PEFT wrote, and comparing results.
#![allow(dead_code)]

pub mod dts;
pub mod gguf_reader;
pub mod kernel_checks;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::Device;
use safetensors::{Dtype, SafeTensors};

pub const MODELS: [&str; 3] = ["llama", "qwen2", "gpt2"];
/// The wave-2 architectures (`manifest_wave2.json`).
pub const WAVE2_MODELS: [&str; 2] = ["qwen3", "gemma3"];

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn gpu() -> Device {
    webtune::device::gpu().expect("a wgpu device (install mesa-vulkan-drivers for lavapipe)").0
}

/// A reference tensor: values as f64 (ids and floats alike) and its shape.
pub struct RefTensor {
    pub shape: Vec<usize>,
    pub values: Vec<f64>,
}

impl RefTensor {
    pub fn ids(&self) -> Vec<u32> {
        self.values.iter().map(|&v| v as u32).collect()
    }

    pub fn f32s(&self) -> Vec<f32> {
        self.values.iter().map(|&v| v as f32).collect()
    }
}

/// Every tensor of a fixture safetensors file (F32 and I64).
pub fn read_reference(path: &Path) -> BTreeMap<String, RefTensor> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = SafeTensors::deserialize(&bytes).unwrap();
    file.iter()
        .map(|(name, view)| {
            let values = match view.dtype() {
                Dtype::F32 => {
                    view.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64).collect()
                }
                Dtype::I64 => {
                    view.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f64).collect()
                }
                other => panic!("{name}: unexpected dtype {other:?}"),
            };
            (name.to_owned(), RefTensor { shape: view.shape().to_vec(), values })
        })
        .collect()
}

/// Largest absolute difference between two equally long slices; NaN when either side holds a NaN
/// anywhere, so that `max_abs_diff(..) < tolerance` fails on NaN output (`fold(0.0, f32::max)`
/// would silently skip it).
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let mut worst = 0f32;
    for (x, y) in a.iter().zip(b) {
        let d = (x - y).abs();
        if d.is_nan() {
            return f32::NAN;
        }
        worst = worst.max(d);
    }
    worst
}

/// The largest of several differences; NaN if any is NaN.
pub fn worst_of(diffs: impl IntoIterator<Item = f32>) -> f32 {
    diffs.into_iter().fold(0f32, |w, d| if w.is_nan() || d.is_nan() { f32::NAN } else { w.max(d) })
}

/// How far a gradient is from its reference, measured two ways so that neither a large gradient
/// (absolute error) nor a tiny one (relative error) hides a wrong result.
#[derive(Clone, Copy, Debug)]
pub struct GradientError {
    /// Largest `|got − ref| / max(1, |ref|)` over the elements.
    pub max_abs: f32,
    /// `‖got − ref‖₂ / ‖ref‖₂` (0 when both are exactly zero, infinite when only `ref` is).
    pub rel_norm: f64,
}

/// Elementwise `|d| ≤ 1e-4·max(1, |ref|)` and `‖d‖ ≤ 1e-3·‖ref‖`: an all-zero (or all-NaN)
/// gradient fails against a non-zero reference however small its values are.
pub const GRAD_ABS_TOLERANCE: f32 = 1e-4;
pub const GRAD_REL_NORM_TOLERANCE: f64 = 1e-3;

pub fn gradient_error(got: &[f32], expected: &[f32]) -> GradientError {
    assert_eq!(got.len(), expected.len(), "length mismatch");
    let (mut max_abs, mut diff_sq, mut ref_sq) = (0f32, 0f64, 0f64);
    for (&g, &r) in got.iter().zip(expected) {
        let d = (g - r).abs();
        let scaled = d / r.abs().max(1.0);
        max_abs = if scaled.is_nan() || max_abs.is_nan() { f32::NAN } else { max_abs.max(scaled) };
        diff_sq += (d as f64).powi(2);
        ref_sq += (r as f64).powi(2);
    }
    let rel_norm = if diff_sq.is_nan() || diff_sq == 0.0 {
        diff_sq
    } else if ref_sq == 0.0 {
        f64::INFINITY
    } else {
        (diff_sq / ref_sq).sqrt()
    };
    GradientError { max_abs, rel_norm }
}

/// Panics unless `got` is within both gradient tolerances of `expected`.
pub fn assert_gradient_close(what: &str, got: &[f32], expected: &[f32]) -> GradientError {
    let e = gradient_error(got, expected);
    assert!(
        e.max_abs <= GRAD_ABS_TOLERANCE && e.rel_norm <= GRAD_REL_NORM_TOLERANCE,
        "{what}: differs from the reference by {:.3e} (elementwise, scaled) and {:.3e} (relative norm)",
        e.max_abs,
        e.rel_norm
    );
    e
}

/// Waits for a core future (GPU readbacks); natively that may block.
pub fn block<F: std::future::Future>(f: F) -> F::Output {
    burn::tensor::read_sync(f)
}

/// A tensor's values, read back from the GPU.
pub fn floats<const D: usize>(t: burn::tensor::Tensor<D>) -> Vec<f32> {
    block(webtune::readback::floats(t)).unwrap()
}

/// A scratch folder under the target dir, emptied first.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("webtune-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Copies a fixture model folder into a scratch folder, to be damaged by a test.
pub fn copy_model(model: &str, name: &str) -> PathBuf {
    let dir = scratch(name);
    for entry in std::fs::read_dir(fixtures().join(model).join("base")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    dir
}
