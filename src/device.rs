//! The compute device: burn's wgpu runtime on Vulkan/Metal/DX12 natively and WebGPU in browsers,
//! or, natively, burn's Flex CPU backend when the only GPU wgpu finds is a software rasteriser
//! (Mesa lavapipe, SwiftShader): emulating a GPU on the CPU is tens of times slower than running
//! the same tensor program on the CPU directly.

use burn::tensor::Device;
use burn::tensor::wgpu::WgpuSetup;

use crate::err;
use crate::error::Result;

/// What the page and the CLI show about the device training runs on.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuInfo {
    pub name: String,
    /// `Vulkan`, `Metal`, `Dx12`, `BrowserWebGpu`, or `Cpu` for the CPU backend.
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

    #[cfg(not(target_arch = "wasm32"))]
    fn cpu(why: &str) -> Self {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        GpuInfo {
            name: format!("CPU ({threads} threads; {why})"),
            backend: "Cpu".to_owned(),
            // Host memory has no binding limit; u64::MAX would not survive JSON numbers.
            max_storage_buffer_binding_size: 1 << 52,
            max_buffer_size: 1 << 52,
        }
    }
}

fn gpu_error(e: impl std::fmt::Display) -> crate::error::Error {
    err!(Gpu, "no usable GPU: {e}")
}

/// Which native device [`gpu`] picks, from `WEBTUNE_DEVICE`: `auto` (default: the GPU unless it is
/// a software rasteriser or absent, then the CPU backend), `gpu` (wgpu, even on a software
/// rasteriser: the tests of GPU kernels use it) or `cpu`.
#[cfg(not(target_arch = "wasm32"))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    Auto,
    Gpu,
    Cpu,
}

#[cfg(not(target_arch = "wasm32"))]
impl DeviceChoice {
    pub fn from_env() -> Result<Self> {
        match std::env::var("WEBTUNE_DEVICE").as_deref() {
            Err(_) | Ok("") | Ok("auto") => Ok(DeviceChoice::Auto),
            Ok("gpu") => Ok(DeviceChoice::Gpu),
            Ok("cpu") => Ok(DeviceChoice::Cpu),
            Ok(other) => Err(err!(InvalidOptions, "WEBTUNE_DEVICE=\"{other}\" is not auto, gpu or cpu")),
        }
    }
}

/// The process-wide device (the wgpu runtime can be initialised only once per process), chosen
/// by `WEBTUNE_DEVICE` (see [`DeviceChoice`]).
#[cfg(not(target_arch = "wasm32"))]
pub fn gpu() -> Result<(Device, GpuInfo)> {
    use std::sync::OnceLock;
    static DEVICE: OnceLock<std::result::Result<(Device, GpuInfo), crate::Error>> = OnceLock::new();
    DEVICE.get_or_init(|| select(DeviceChoice::from_env()?)).clone()
}

#[cfg(not(target_arch = "wasm32"))]
fn select(choice: DeviceChoice) -> Result<(Device, GpuInfo)> {
    use burn::tensor::wgpu::wgpu::DeviceType;
    if choice == DeviceChoice::Cpu {
        return Ok((Device::flex(), GpuInfo::cpu("WEBTUNE_DEVICE=cpu")));
    }
    match Device::wgpu_options().init_with_setup() {
        Ok((_, setup)) if choice == DeviceChoice::Auto && setup.adapter.get_info().device_type == DeviceType::Cpu => {
            let why = format!("the only GPU, {}, is a software rasteriser", setup.adapter.get_info().name);
            Ok((Device::flex(), GpuInfo::cpu(&why)))
        }
        Ok((device, setup)) => Ok((device, GpuInfo::of(&setup))),
        Err(e) if choice == DeviceChoice::Auto => Ok((Device::flex(), GpuInfo::cpu(&format!("no GPU: {e}")))),
        Err(e) => Err(gpu_error(e)),
    }
}

/// Acquires the browser's WebGPU device; call once and keep the result.
pub async fn gpu_async() -> Result<(Device, GpuInfo)> {
    let (device, setup) = Device::wgpu_options().init_with_setup_async().await.map_err(gpu_error)?;
    Ok((device, GpuInfo::of(&setup)))
}
