//! Device set-up. The adapter's real limits are requested (WebGPU's defaults cap a storage
//! binding at 128 MiB, too small for a vocabulary-sized table on capable devices).

use crate::{Error, Result};
use std::sync::{Arc, Mutex};

/// An acquired device and queue, with what the adapter reported.
pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    /// Whether the device was created with `timestamp-query` (profiling, `Gpu::profile_start`).
    pub timestamps: bool,
    /// Whether WGSL's `dot4I8Packed` family (language feature `packed_4x8_integer_dot_product`)
    /// may be used: the integer W4A8 product then uses it, else an exact emulation
    /// (src/gpu/intmm.rs). Natively wgpu's naga always offers it (lowered to SPIR-V `OpSDot`
    /// where the Vulkan device has VK_KHR_shader_integer_dot_product, else to naga's own
    /// polyfill); in the browser it is what `navigator.gpu.wgslLanguageFeatures` lists.
    pub dot4: bool,
    /// Whether the f16 tensor-core product (`shaders/matmul_coop.wgsl`) can run here: the
    /// adapter offers wgpu's cooperative matrices with a 16×16×16 f16 → f32 configuration,
    /// f16 shader values, and subgroups exactly 32 wide (the kernel maps its 128 invocations
    /// to 4 subgroups). Native only: WebGPU has no cooperative matrices yet.
    pub coop: bool,
    /// Whether the device was created with f16 shader values (wgpu SHADER_F16, WebGPU
    /// `shader-f16`), requested only where the adapter offers them: `--precision f16` (the
    /// page's f16 choice) then runs `shaders/matmul_f16.wgsl` where there is no `coop`.
    pub f16: bool,
    /// Set by wgpu's device-lost callback (driver reset, GPU process crash, `destroy`): the
    /// reason in words. A lost device never comes back; the session reloads onto a new one
    /// (`playground::session::Session::move_to`).
    lost: Arc<Mutex<Option<String>>>,
}

impl GpuContext {
    /// Acquire the best available adapter (high performance preferred) and a device with its
    /// full limits. Fails with a clear message when there is no WebGPU/Vulkan adapter.
    pub async fn new() -> Result<Self> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
        let options = |power_preference| wgpu::RequestAdapterOptions {
            power_preference,
            force_fallback_adapter: false,
            compatible_surface: None,
            // We want the device's true limits (largest storage binding), not a bucket.
            apply_limit_buckets: false,
        };
        // Chromium on Linux with an NVIDIA GPU (Vulkan, headless; docs/chromium-gpu.md) answered
        // one request of a fresh browser with no adapter and the next with the GPU, so a failed
        // high-performance request is asked once more without a preference.
        let adapter = match instance
            .request_adapter(&options(wgpu::PowerPreference::HighPerformance))
            .await
        {
            Ok(adapter) => adapter,
            Err(_) => instance
                .request_adapter(&options(wgpu::PowerPreference::None))
                .await
                .map_err(|e| {
                    Error::unsupported("gpu", "adapter", format!("no GPU adapter: {e}"))
                })?,
        };
        let info = adapter.get_info();
        let dot4 = instance
            .wgsl_language_features()
            .contains(wgpu::WgslLanguageFeatures::Packed4x8IntegerDotProduct);
        let limits = adapter.limits();
        // The format fragments unpack f16 scales with `unpack2x16float`, which WebGPU guarantees
        // but downlevel (GL) adapters may lack.
        let downlevel = adapter.get_downlevel_capabilities();
        if !downlevel
            .flags
            .contains(wgpu::DownlevelFlags::SHADER_F16_IN_F32)
        {
            return Err(Error::unsupported(
                "gpu",
                "adapter",
                format!(
                    "{} cannot unpack f16 in shaders (not WebGPU compliant)",
                    info.name
                ),
            ));
        }
        // Timestamp queries only for profiling; taken when offered, never required.
        let timestamps = adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY);
        let mut features = if timestamps {
            wgpu::Features::TIMESTAMP_QUERY
        } else {
            wgpu::Features::empty()
        };
        let coop = coop_usable(&adapter, &info);
        let f16 = adapter.features().contains(wgpu::Features::SHADER_F16);
        if f16 {
            features |= wgpu::Features::SHADER_F16;
        }
        if coop {
            features |=
                wgpu::Features::SHADER_F16 | wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
        }
        // SAFETY (wgpu's contract for EXPERIMENTAL features): the token is given only when the
        // cooperative-matrix feature is requested, and only `matmul_coop.wgsl` uses it; its
        // results are checked against the f32 kernel (tests/gpu_coop.rs, `bench --precision`).
        let experimental_features = if coop {
            unsafe { wgpu::ExperimentalFeatures::enabled() }
        } else {
            wgpu::ExperimentalFeatures::disabled()
        };
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("quantlab"),
                required_features: features,
                required_limits: limits.clone(),
                experimental_features,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::unsupported("gpu", "device", format!("{}: {e}", info.name)))?;
        let lost: Arc<Mutex<Option<String>>> = Arc::default();
        let slot = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            let mut s = slot.lock().unwrap_or_else(|p| p.into_inner());
            let why = match (reason, message.trim()) {
                (wgpu::DeviceLostReason::Destroyed, "") => "destroyed".to_string(),
                (wgpu::DeviceLostReason::Destroyed, m) => format!("destroyed: {m}"),
                (_, "") => "lost (no reason given)".to_string(),
                (_, m) => m.to_string(),
            };
            s.get_or_insert(why);
        });
        Ok(GpuContext {
            device,
            queue,
            info,
            limits,
            timestamps,
            dot4,
            coop,
            f16,
            lost,
        })
    }

    /// Why the device was lost, once it has been (see `lost`). Natively wgpu reports a loss
    /// when the device is polled; in the browser when the `GPUDevice.lost` promise settles.
    pub fn lost(&self) -> Option<String> {
        self.lost.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Destroy the device, as a driver reset would lose it: every later operation fails and the
    /// device-lost callback reports it. For tests of the recovery (the page's test hooks).
    pub fn destroy(&self) {
        self.device.destroy();
        // Natively the callback runs on the next poll; run it now so `lost()` answers at once.
        #[cfg(not(target_arch = "wasm32"))]
        let _ = self.device.poll(wgpu::PollType::Poll);
    }

    /// Why no f16 product (tensor cores, else packed f16) can run on this device, or None
    /// when one can.
    pub fn f16_missing(&self) -> Option<String> {
        (!self.coop && !self.f16).then(|| {
            format!(
                "{} offers neither f16 shader values (WebGPU shader-f16, wgpu SHADER_F16) nor \
                 cooperative matrices with 16×16×16 f16 inputs and f32 accumulation on 32-wide \
                 subgroups (wgpu's EXPERIMENTAL_COOPERATIVE_MATRIX, Vulkan \
                 VK_KHR_cooperative_matrix); use --precision f32",
                self.describe()
            )
        })
    }

    /// "name (backend)" for reports.
    pub fn describe(&self) -> String {
        format!("{} ({:?})", self.info.name, self.info.backend)
    }
}

/// Whether `adapter` can run `shaders/matmul_coop.wgsl` (see `GpuContext::coop`).
fn coop_usable(adapter: &wgpu::Adapter, info: &wgpu::AdapterInfo) -> bool {
    use wgpu::CooperativeScalarType as T;
    let needed = wgpu::Features::SHADER_F16 | wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
    if !adapter.features().contains(needed) {
        return false;
    }
    if info.subgroup_min_size != 32 || info.subgroup_max_size != 32 {
        return false;
    }
    adapter.cooperative_matrix_properties().iter().any(|p| {
        (p.m_size, p.n_size, p.k_size) == (16, 16, 16) && p.ab_type == T::F16 && p.cr_type == T::F32
    })
}
