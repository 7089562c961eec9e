//! The GPU device: burn's wgpu runtime on Vulkan/Metal/DX12 natively and WebGPU in browsers.

use burn::tensor::Device;
use burn::tensor::wgpu::WgpuSetup;

use crate::err;
use crate::error::Result;

/// What the page shows about the GPU it trains on.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GpuInfo {
    pub name: String,
    pub backend: String,
    /// The largest storage buffer one kernel may bind: caps the largest tensor (e.g. logits).
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
}

impl GpuInfo {
    fn of(setup: &WgpuSetup) -> Self {
        let info = setup.adapter.get_info();
        let limits = setup.device.limits();
        GpuInfo {
            name: info.name,
            backend: format!("{:?}", setup.backend),
            max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
            max_buffer_size: limits.max_buffer_size,
        }
    }
}

fn gpu_error(e: impl std::fmt::Display) -> crate::error::Error {
    err!(Gpu, "no usable GPU: {e}")
}

/// The process-wide GPU device (the wgpu runtime can be initialised only once per process).
#[cfg(not(target_arch = "wasm32"))]
pub fn gpu() -> Result<(Device, GpuInfo)> {
    use std::sync::OnceLock;
    static GPU: OnceLock<std::result::Result<(Device, GpuInfo), String>> = OnceLock::new();
    GPU.get_or_init(|| {
        Device::wgpu_options()
            .init_with_setup()
            .map(|(device, setup)| (device, GpuInfo::of(&setup)))
            .map_err(|e| e.to_string())
    })
    .clone()
    .map_err(gpu_error)
}

/// Acquires the browser's WebGPU device; call once and keep the result.
pub async fn gpu_async() -> Result<(Device, GpuInfo)> {
    let (device, setup) = Device::wgpu_options().init_with_setup_async().await.map_err(gpu_error)?;
    Ok((device, GpuInfo::of(&setup)))
}
