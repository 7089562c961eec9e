//! Helpers shared by the integration tests: fixture paths, reading the reference tensors that
//! transformers + PEFT wrote, and comparing results.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::Device;
use safetensors::{Dtype, SafeTensors};

pub const MODELS: [&str; 3] = ["llama", "qwen2", "gpt2"];

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

/// Largest absolute difference between two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
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
