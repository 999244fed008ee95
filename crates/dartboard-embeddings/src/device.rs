//! From the user's spelling of a device and precision to tch's.

use dartboard_config::{DType, DeviceSpec};
use tch::{Device, Kind};

use crate::EmbedError;

/// Resolves a device spec against what this libtorch can see.
///
/// `auto` quietly falls back to the CPU; an explicit `cuda` that cannot be used is an
/// error, because silently running a GPU deployment on the CPU is the failure users
/// notice last.
pub fn resolve_device(spec: DeviceSpec) -> Result<Device, EmbedError> {
    match spec {
        DeviceSpec::Cpu => Ok(Device::Cpu),
        DeviceSpec::Auto if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
        DeviceSpec::Auto => Ok(Device::Cpu),
        DeviceSpec::Cuda(index) => {
            let count = if tch::Cuda::is_available() { tch::Cuda::device_count() } else { 0 };
            if (index as i64) < count {
                Ok(Device::Cuda(index))
            } else {
                Err(EmbedError::DeviceUnavailable {
                    device: spec.to_string(),
                    reason: format!(
                        "this libtorch sees {count} CUDA device(s); use --device cpu (EMBEDDING_DEVICE=cpu) \
                         or auto, or check the NVIDIA driver and that libtorch was built with CUDA"
                    ),
                })
            }
        }
    }
}

/// tch's tensor kind for a compute precision.
pub fn kind_of(dtype: DType) -> Kind {
    match dtype {
        DType::F32 => Kind::Float,
        DType::Bf16 => Kind::BFloat16,
        DType::F16 => Kind::Half,
    }
}

/// Human spelling of a tch device: `cpu`, `cuda:0`.
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cuda(i) => format!("cuda:{i}"),
        Device::Mps => "mps".to_owned(),
        Device::Vulkan => "vulkan".to_owned(),
        _ => "cpu".to_owned(),
    }
}
