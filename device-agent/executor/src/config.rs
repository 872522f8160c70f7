//! What a device allows its jobs: defaults for a spec's zero limits, ceilings for the
//! rest, caps on what a job may report, and the runtimes' stack settings.
//!
//! A job spec's limits are requests signed by the controller; the device has the last
//! word. A zero limit means "the device's default" (`fleet_schemas::Limits`), and a
//! request above the device's ceiling is lowered to it rather than refused: the job
//! then fails with the reason the ceiling caused (out of fuel, out of memory, timeout),
//! which tells the operator exactly what to change.

use alloc::string::String;

use fleet_schemas::limits::MAX_EVENT_BYTES;
use fleet_schemas::{DeviceId, Limits};

/// Caps on what one execution may report. They keep a `Failed`/`Succeeded` event under
/// the protocol's `MAX_EVENT_BYTES` whatever the job writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputCaps {
    /// Result bytes kept; `output` accepts no more after this.
    pub max_output_bytes: usize,
    /// Log lines kept; later lines are counted and dropped.
    pub max_log_lines: usize,
    /// Bytes kept of one log line; the rest is cut.
    pub max_log_line_bytes: usize,
}

impl OutputCaps {
    /// The most bytes the caps let output and logs take together.
    pub const fn worst_case_bytes(&self) -> usize {
        self.max_output_bytes + self.max_log_lines * (self.max_log_line_bytes + 8)
    }
}

/// The device's executor settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorConfig {
    /// The device id jobs read with `fleet::device_id`.
    pub device_id: DeviceId,
    /// Used for each limit a spec leaves at zero. A zero `timeout_ms` here means no
    /// wall-clock bound by default.
    pub default_limits: Limits,
    /// Each limit a spec asks for is lowered to this. A zero here means "no ceiling".
    pub max_limits: Limits,
    /// Caps on output and logs.
    pub caps: OutputCaps,
    /// Data inputs a job may hold open at once.
    pub max_open_inputs: usize,
    /// Compiled modules kept for reuse, keyed by SHA-256 (0 disables the cache).
    pub module_cache_entries: usize,
    /// Bytes of native stack Wasm code may use (wasmtime), or of value stack
    /// (wasmi). Exhausting it is a stack-overflow trap.
    pub stack_bytes: usize,
    /// Nested calls allowed (wasmi; wasmtime bounds recursion by `stack_bytes`).
    pub max_call_depth: usize,
    /// Wasmi only: fuel handed out per slice when a clock or a stop signal must be
    /// checked during the run. Smaller reacts faster and costs more.
    pub fuel_slice: u64,
}

impl ExecutorConfig {
    /// Settings for a Linux gateway: generous defaults, a module cache, and caps that fit
    /// an event.
    pub fn gateway(device_id: DeviceId) -> Self {
        Self {
            device_id,
            default_limits: Limits { fuel: 5_000_000_000, memory_pages: 256, timeout_ms: 10_000 },
            max_limits: Limits { fuel: 1_000_000_000_000, memory_pages: 4096, timeout_ms: 600_000 },
            caps: OutputCaps { max_output_bytes: 16 * 1024, max_log_lines: 64, max_log_line_bytes: 512 },
            max_open_inputs: 8,
            module_cache_entries: 32,
            stack_bytes: 512 * 1024,
            max_call_depth: 10_000,
            fuel_slice: 10_000_000,
        }
    }

    /// Settings for a Cortex-M class microcontroller: a few pages of memory, small
    /// caps, a one-entry cache (a device often runs the same job again). No default
    /// timeout: without a [`Clock`](crate::Clock) the fuel budget is the time bound.
    pub fn microcontroller(device_id: DeviceId) -> Self {
        Self {
            device_id,
            default_limits: Limits { fuel: 50_000_000, memory_pages: 2, timeout_ms: 0 },
            max_limits: Limits { fuel: 2_000_000_000, memory_pages: 4, timeout_ms: 0 },
            caps: OutputCaps { max_output_bytes: 2 * 1024, max_log_lines: 16, max_log_line_bytes: 128 },
            max_open_inputs: 2,
            module_cache_entries: 1,
            stack_bytes: 64 * 1024,
            max_call_depth: 256,
            fuel_slice: 1_000_000,
        }
    }

    /// The limits one job runs under: its requests, with zeros replaced by the defaults
    /// and everything lowered to the ceilings.
    pub fn resolve(&self, requested: Limits) -> ResolvedLimits {
        fn pick<T: Copy + Ord + Default>(requested: T, default: T, max: T) -> T {
            let zero = T::default();
            let value = if requested == zero { default } else { requested };
            if max != zero && value > max { max } else { value }
        }
        let d = self.default_limits;
        let m = self.max_limits;
        let timeout_ms = pick(requested.timeout_ms, d.timeout_ms, m.timeout_ms);
        ResolvedLimits {
            fuel: pick(requested.fuel, d.fuel, m.fuel),
            memory_pages: pick(requested.memory_pages, d.memory_pages, m.memory_pages),
            timeout_ms: (timeout_ms != 0).then_some(timeout_ms),
        }
    }

    /// Whether the caps fit in one event with room to spare for its other fields.
    pub fn caps_fit_event(&self) -> bool {
        self.caps.worst_case_bytes() + 1024 <= MAX_EVENT_BYTES
    }
}

/// The bounds one execution runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolvedLimits {
    /// Fuel budget (runtime-specific units, roughly one per instruction).
    pub fuel: u64,
    /// Linear memory cap, in 64 KiB pages.
    pub memory_pages: u32,
    /// Wall-clock bound, if any (needs a clock: always on wasmtime, a [`Clock`](crate::Clock) on wasmi).
    pub timeout_ms: Option<u32>,
}

impl ResolvedLimits {
    /// The memory cap in bytes.
    pub fn memory_bytes(&self) -> usize {
        (self.memory_pages as usize).saturating_mul(crate::abi::PAGE_BYTES)
    }
}

/// Why an executor could not be built (a bad configuration, or no thread for the
/// timeout ticker). Not about any job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot set up the {runtime} executor: {message}")]
pub struct SetupError {
    /// The runtime.
    pub runtime: &'static str,
    /// What went wrong.
    pub message: String,
}
