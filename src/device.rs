//! The compute device: burn's wgpu runtime on Vulkan/Metal/DX12 natively and WebGPU in browsers,
//! or, natively, burn's Flex CPU backend when the only GPU wgpu finds is a software rasteriser
//! (Mesa lavapipe, SwiftShader): emulating a GPU on the CPU is tens of times slower than running
//! the same tensor program on the CPU directly.

use std::sync::Mutex;

use burn::tensor::wgpu::WgpuSetup;
use burn::tensor::{Device, FloatDType};

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
    /// Whether kernels can compute in f16 (WebGPU's `shader-f16`): half-precision checkpoints
    /// then stay 2 bytes per weight on the device; without it they are stored in f32.
    pub shader_f16: bool,
    /// Memory the weights must fit in, where known: natively the host's RAM (a sane upper bound
    /// for any device it feeds); browsers do not tell.
    pub memory_bytes: Option<u64>,
    /// Loop iterations one shader invocation may run before the driver skips the rest of its
    /// loops: Mesa's llvmpipe (lavapipe) stops at 65,535 (`LP_MAX_TGSI_LOOP_ITERATIONS`, one
    /// counter for all loops). Kernels whose loops grow with the input check it.
    #[serde(skip)]
    pub shader_loop_limit: Option<u64>,
}

/// [`GpuInfo::backend`] of burn's Flex CPU backend.
const CPU_BACKEND: &str = "Cpu";

/// Kernels recorded before CubeCL submits them to the GPU queue natively (its `tasks_max`, 32 by
/// default, which `CUBECL_WGPU_MAX_TASKS` no longer overrides). Lavapipe, the README's 2-layer
/// SmolLM2 step: 32 took 6.9-7.3 s, 128 4.9-6.7 s, 256 8.4-8.6 s (the device waits longer for its
/// first kernels).
#[cfg(not(target_arch = "wasm32"))]
const KERNELS_PER_SUBMIT: usize = 128;

/// The same in a browser, where a submission is a round trip to the GPU process that waits while
/// that process is busy: the page submits when a step reads its loss (a step is under this many
/// kernels), and records the next step in one go while the GPU runs the last one. Chromium
/// (SwiftShader), SmolLM2 shape, batch 1 × 16, host ms per step at 4 and 8 layers: 32 per
/// submission 29-35 at 4, 128 21.2 and 38.6, 4096 7.9 and 11.4.
const KERNELS_PER_SUBMIT_IN_BROWSER: usize = 4096;

impl GpuInfo {
    /// Whether training runs on the CPU backend rather than a GPU.
    pub fn is_cpu(&self) -> bool {
        self.backend == CPU_BACKEND
    }

    /// The device as messages name it (browsers may report an empty adapter name).
    pub fn label(&self) -> String {
        if self.name.is_empty() { format!("this GPU ({})", self.backend) } else { self.name.clone() }
    }

    fn of(setup: &WgpuSetup, device: &Device) -> Self {
        let info = setup.adapter.get_info();
        let limits = setup.device.limits();
        let shader_loop_limit = info.name.contains("llvmpipe").then_some(LLVMPIPE_LOOP_LIMIT);
        GpuInfo {
            name: info.name,
            backend: format!("{:?}", setup.backend),
            max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
            max_buffer_size: limits.max_buffer_size,
            shader_f16: device.supports_dtype(FloatDType::F16),
            memory_bytes: host_memory(),
            shader_loop_limit,
        }
    }

    /// Capabilities of a device nobody recorded: no limits but what the backend says about f16.
    fn unrecorded(device: &Device) -> Self {
        GpuInfo {
            name: "the device".to_owned(),
            backend: "unknown".to_owned(),
            max_storage_buffer_binding_size: 1 << 52,
            max_buffer_size: 1 << 52,
            shader_f16: device.supports_dtype(FloatDType::F16),
            memory_bytes: None,
            shader_loop_limit: None,
        }
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn cpu(why: &str) -> Self {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        GpuInfo {
            name: format!("CPU ({threads} threads; {why})"),
            backend: CPU_BACKEND.to_owned(),
            // Host memory has no binding limit; u64::MAX would not survive JSON numbers.
            max_storage_buffer_binding_size: 1 << 52,
            max_buffer_size: 1 << 52,
            shader_f16: Device::flex().supports_dtype(FloatDType::F16),
            memory_bytes: host_memory(),
            shader_loop_limit: None,
        }
    }
}

/// Mesa's `LP_MAX_TGSI_LOOP_ITERATIONS`.
const LLVMPIPE_LOOP_LIMIT: u64 = 65_535;

/// `MemTotal` of `/proc/meminfo`, where there is one.
fn host_memory() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let text = std::fs::read_to_string("/proc/meminfo").ok()?;
        let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }
    #[cfg(not(target_os = "linux"))]
    None
}

/// Devices acquired through [`gpu`] / [`gpu_async`] with what was learnt about them.
static RECORDED: Mutex<Vec<(Device, GpuInfo)>> = Mutex::new(Vec::new());

fn record(device: &Device, info: &GpuInfo) {
    let mut recorded = RECORDED.lock().unwrap_or_else(|e| e.into_inner());
    recorded.retain(|(d, _)| d != device);
    recorded.push((device.clone(), info.clone()));
}

/// What is known about `device`: its recorded capabilities and limits, or (a device made
/// elsewhere) none but its f16 support.
pub fn info_of(device: &Device) -> GpuInfo {
    let recorded = RECORDED.lock().unwrap_or_else(|e| e.into_inner());
    recorded.iter().find(|(d, _)| d == device).map_or_else(|| GpuInfo::unrecorded(device), |(_, info)| info.clone())
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
    DEVICE
        .get_or_init(|| {
            let (device, info) = select(DeviceChoice::from_env()?)?;
            record(&device, &info);
            Ok((device, info))
        })
        .clone()
}

#[cfg(not(target_arch = "wasm32"))]
fn select(choice: DeviceChoice) -> Result<(Device, GpuInfo)> {
    use burn::tensor::wgpu::wgpu::DeviceType;
    if choice == DeviceChoice::Cpu {
        return Ok((Device::flex(), GpuInfo::cpu("WEBTUNE_DEVICE=cpu")));
    }
    match Device::wgpu_options().tasks_max(KERNELS_PER_SUBMIT).init_with_setup() {
        Ok((_, setup)) if choice == DeviceChoice::Auto && setup.adapter.get_info().device_type == DeviceType::Cpu => {
            let why = format!("the only GPU, {}, is a software rasteriser", setup.adapter.get_info().name);
            Ok((Device::flex(), GpuInfo::cpu(&why)))
        }
        Ok((device, setup)) => {
            let info = GpuInfo::of(&setup, &device);
            Ok((device, info))
        }
        Err(e) if choice == DeviceChoice::Auto => Ok((Device::flex(), GpuInfo::cpu(&format!("no GPU: {e}")))),
        Err(e) => Err(gpu_error(e)),
    }
}

/// Acquires the browser's WebGPU device; call once and keep the result.
pub async fn gpu_async() -> Result<(Device, GpuInfo)> {
    let (device, setup) = Device::wgpu_options()
        .tasks_max(KERNELS_PER_SUBMIT_IN_BROWSER)
        .init_with_setup_async()
        .await
        .map_err(gpu_error)?;
    let info = GpuInfo::of(&setup, &device);
    record(&device, &info);
    Ok((device, info))
}
