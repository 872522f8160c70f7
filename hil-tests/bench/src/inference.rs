//! Inference (issue 8's figures): the example job `window-classify` through wasi-nn on
//! the gateway executor, beside the same ONNX model run by ONNX Runtime directly (no
//! Wasm, no agent), on the CPU and, where this machine has one that ONNX Runtime can
//! drive, on the GPU.
//!
//! What the rows say:
//! * *per inference*: one `run` of an already loaded model, ONNX Runtime directly;
//!   GPU beside CPU;
//! * *per job*: what an execution of the job costs (instantiate the cached module, read
//!   the input, load the model, one inference, output), beside the same load + one
//!   inference done directly: the difference is the agent's overhead per job.
//!
//! ONNX Runtime comes from `ORT_DYLIB_PATH` (the `onnxruntime` wheel on a CPU machine,
//! `onnxruntime-gpu` on a GPU one). A GPU row is measured only where a GPU session
//! really loads (the CUDA provider is registered with `error_on_failure`); elsewhere it
//! says why it was not.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use fleet_executor::nn::{OnnxRuntime, execution_provider};
use fleet_executor::{Accelerator, ExecutorConfig, Job, MemoryInputs, WasmtimeExecutor};
use fleet_schemas::DeviceId;
use ort::session::Session;
use ort::value::Tensor;

use crate::micro::mean;
use crate::table::{self, Row, Table};

/// A rising window of readings, as the job reads them.
fn readings() -> MemoryInputs {
    let csv: String = (0..16).map(|i| format!("{},{}\n", 1_700_000_000 + i, 20.0 + 0.5 * f64::from(i))).collect();
    MemoryInputs::new().with("readings", csv.into_bytes())
}

/// A session of the example model on `on`, straight from ONNX Runtime (with the
/// executor's provider settings, so the two differ only by Wasm and the agent).
fn direct_session(on: Accelerator) -> anyhow::Result<Session> {
    Ok(Session::builder()?
        .with_execution_providers([execution_provider(on)])?
        .commit_from_memory(fleet_example_jobs::WINDOW_CLASSIFIER_ONNX)?)
}

/// One inference on a loaded session; the scores, to check and to keep the work alive.
fn infer(session: &mut Session, window: &[f32; 16]) -> anyhow::Result<f32> {
    let input = Tensor::from_array(([1usize, 16], window.to_vec()))?;
    let outputs = session.run(ort::inputs!["window" => input])?;
    let (_, scores) = outputs["scores"].try_extract_tensor::<f32>()?;
    Ok(scores.get(1).copied().unwrap_or_default())
}

/// Seconds per inference, per direct load + inference, and per job on `on`.
struct Figures {
    inference: f64,
    direct_job: f64,
    job: f64,
}

fn measure(executor: &WasmtimeExecutor, on: Accelerator, budget: Duration) -> anyhow::Result<Figures> {
    let window: [f32; 16] = std::array::from_fn(|i| 20.0 + 0.5 * i as f32);
    let mut session = direct_session(on)?;
    anyhow::ensure!(infer(&mut session, &window)? > 0.9, "the model does not see a rising window as rising");
    let inference = mean(budget, || {
        black_box(infer(&mut session, &window).is_ok());
    });
    let direct_job = mean(budget, || {
        black_box(direct_session(on).and_then(|mut s| infer(&mut s, &window)).is_ok());
    });

    let listed = ["readings".to_string()];
    let job = Job::new(fleet_example_jobs::WINDOW_CLASSIFY).with_inputs(&listed).on(on);
    let report = executor.run(&job, readings()).map_err(|f| anyhow::anyhow!("{f}: {:?}", f.report.logs))?;
    let output = String::from_utf8_lossy(&report.output);
    anyhow::ensure!(output.starts_with("class=rising"), "window-classify said {output}");
    let job_time = mean(budget, || {
        black_box(executor.run(&job, readings()).is_ok());
    });
    Ok(Figures { inference, direct_job, job: job_time })
}

/// The inference rows.
pub fn inference(quick: bool, table: &mut Table) -> anyhow::Result<()> {
    let Some(library) = std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty()) else {
        table.add(table::alone(
            "inference: per inference, CPU",
            "not measured",
            "ORT_DYLIB_PATH is not set (ONNX Runtime's shared library; .ci/run fetches it)",
        ));
        return Ok(());
    };
    let runtime: Arc<OnnxRuntime> = OnnxRuntime::load(Path::new(&library)).context("loading ONNX Runtime")?;
    let budget = if quick { Duration::from_millis(300) } else { Duration::from_secs(2) };
    let mut config = ExecutorConfig::gateway(DeviceId::new("bench-gateway")?);
    config.module_cache_entries = 8;
    let executor = WasmtimeExecutor::new(config)?.with_inference(runtime.clone());
    let ort = format!("ONNX Runtime {}", runtime.version());

    let cpu = measure(&executor, Accelerator::Cpu, budget)?;
    let gpu = if runtime.has_gpu_provider() {
        measure(&executor, Accelerator::Gpu, budget).map_err(|e| format!("no GPU session: {e:#}"))
    } else {
        Err(format!("no GPU here: {ort} is a CPU-only build (no CUDA provider)"))
    };

    match &gpu {
        Ok(gpu) => table.add(Row {
            figure: "inference: per inference, GPU vs CPU".into(),
            ours: format!("{} (GPU)", table::us(gpu.inference)),
            peer: format!("{} (CPU)", table::us(cpu.inference)),
            ratio: table::time_ratio(gpu.inference, cpu.inference),
            conditions: format!("window-classify's model (16 → 2 → 3 MLP), loaded once; {ort}, CUDA vs CPU provider"),
        }),
        Err(why) => {
            table.add(table::alone(
                "inference: per inference, CPU",
                table::us(cpu.inference),
                format!("window-classify's model (16 → 2 → 3 MLP), loaded once; {ort}, CPU provider"),
            ));
            table.add(table::alone("inference: per inference, GPU", "not measured", why.clone()));
        }
    }
    for (on, figures) in [("CPU", Some(&cpu)), ("GPU", gpu.as_ref().ok())] {
        let Some(f) = figures else { continue };
        table.add(Row {
            figure: format!("inference job: per execution, {on}"),
            ours: format!("{} (wasi-nn job)", table::us(f.job)),
            peer: format!("{} (ONNX Runtime direct)", table::us(f.direct_job)),
            ratio: table::time_ratio(f.job, f.direct_job),
            conditions: format!(
                "agent overhead per job {}: wasmtime instance (module cached), input read, model load + one \
                 inference through wasi-nn, vs load + one inference from Rust",
                table::us((f.job - f.direct_job).max(0.0))
            ),
        });
    }
    Ok(())
}
