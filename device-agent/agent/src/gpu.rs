//! GPU detection, reported in the device's capabilities and status.
//!
//! A stub for now: it reports no GPU, so jobs that *require* one are refused with
//! `Unsupported::GpuRequired` and jobs that merely *prefer* one run on the CPU. Real
//! detection (NVML, `/proc/driver/nvidia`, DRM sysfs) belongs here, run once at start;
//! nothing else in the agent needs to change when it lands.

use fleet_schemas::status::GpuInfo;

/// The GPU this machine offers jobs, if any. Always `None` for now (see the module docs).
pub fn detect() -> Option<GpuInfo> {
    None
}
