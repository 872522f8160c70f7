//! The harness's one tokio runtime.
//!
//! Why one, and why hidden: the scenarios are plain sequential code (start this, cut
//! that, wait for the other), which reads best without `async`. The parts that must run
//! concurrently with them (fault proxies, MQTT observers) are tasks on this runtime; the
//! scenario talks to them through synchronous handles. Two worker threads are enough:
//! proxies move a few kilobytes per second, and CI has two cores.

use std::sync::OnceLock;

use tokio::runtime::{Builder, Handle, Runtime};

use crate::error::{Result, io};

/// The shared runtime's handle, started on first use.
pub fn handle() -> Result<Handle> {
    static RUNTIME: OnceLock<std::result::Result<Runtime, String>> = OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fleet-hil")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    });
    match runtime {
        Ok(runtime) => Ok(runtime.handle().clone()),
        Err(message) => Err(io("cannot start the harness's tokio runtime")(std::io::Error::other(message.clone()))),
    }
}
