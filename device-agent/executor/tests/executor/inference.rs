//! wasi-nn on the gateway backend: the example inference job (`window-classify`,
//! which carries a small ONNX model) classifies sensor windows through the same
//! interface a GPU gateway serves, on ONNX Runtime's CPU provider; a GPU placement on a
//! runtime without a GPU provider fails instead of quietly running on the CPU; and the
//! wasi-nn host functions check the job's pointers like every other host call.
//!
//! ONNX Runtime is the real library, from the `onnxruntime` wheel `.ci/run` installs,
//! found through `ORT_DYLIB_PATH`.

use std::sync::Arc;

use fleet_executor::nn::OnnxRuntime;
use fleet_executor::{Accelerator, Job, MemoryInputs, NoInputs, WasmiExecutor, WasmtimeExecutor};
use fleet_schemas::FailReason;

use crate::support::{Backend, config, expect_failure};

/// The ONNX Runtime library the tests run on.
pub fn onnxruntime() -> Arc<OnnxRuntime> {
    let path = std::env::var_os("ORT_DYLIB_PATH").unwrap_or_else(|| {
        panic!(
            "ORT_DYLIB_PATH is not set: the inference tests need ONNX Runtime's shared library \
             (`bash .ci/run` installs the onnxruntime wheel and sets it)"
        )
    });
    OnnxRuntime::load(std::path::Path::new(&path)).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_runtime_reports_its_version_from_the_library_it_loaded() {
    let runtime = onnxruntime();
    let file = runtime.library().file_name().unwrap().to_string_lossy().into_owned();
    let (_, version) = file.split_once(".so.").expect("the wheel's library is libonnxruntime.so.X.Y.Z");
    assert_eq!(runtime.version(), version);
    assert_eq!(version.split('.').filter(|p| p.parse::<u32>().is_ok()).count(), 3, "{version}");
}

fn executor() -> WasmtimeExecutor {
    WasmtimeExecutor::new(config()).unwrap().with_inference(onnxruntime())
}

/// A `readings` CSV of `values`, one per second.
fn readings(values: impl IntoIterator<Item = f32>) -> MemoryInputs {
    let csv: String = values.into_iter().enumerate().map(|(i, v)| format!("{},{v}\n", 1_700_000_000 + i)).collect();
    MemoryInputs::new().with("readings", csv.into_bytes())
}

fn classify(executor: &WasmtimeExecutor, accelerator: Accelerator, inputs: MemoryInputs) -> fleet_executor::RunResult {
    let names = vec!["readings".to_string()];
    executor.run(&Job::new(fleet_example_jobs::WINDOW_CLASSIFY).with_inputs(&names).on(accelerator), inputs)
}

/// The class the job printed, and its three scores.
fn class_of(output: &[u8]) -> (String, [f32; 3]) {
    let text = String::from_utf8_lossy(output);
    let class = text.split_whitespace().find_map(|w| w.strip_prefix("class=")).unwrap().to_string();
    let scores: Vec<f32> = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("scores="))
        .unwrap()
        .split(',')
        .map(|s| s.parse().unwrap())
        .collect();
    (class, [scores[0], scores[1], scores[2]])
}

#[test]
fn the_inference_job_classifies_sensor_windows_on_the_cpu() {
    let executor = executor();
    let noise = |i: usize| ((i * 7919) % 13) as f32 * 0.002 - 0.012;
    let cases: [(&str, Vec<f32>); 4] = [
        ("rising", (0..40).map(|i| 18.0 + 0.25 * i as f32 + noise(i)).collect()),
        ("falling", (0..16).map(|i| 60.0 - 1.5 * i as f32).collect()),
        ("steady", (0..100).map(|i| 21.5 + noise(i)).collect()),
        // Only the last 16 readings count: a long climb that has levelled off is steady.
        ("steady", (0..64).map(|i| 10.0 + 0.5 * (i.min(40) as f32)).collect()),
    ];
    for (expected, values) in cases {
        let count = values.len();
        let report = classify(&executor, Accelerator::Cpu, readings(values)).unwrap();
        let (class, scores) = class_of(&report.output);
        assert_eq!(class, expected, "output: {}", String::from_utf8_lossy(&report.output));
        let best = scores.iter().cloned().fold(0.0f32, f32::max);
        assert!(best > 0.9, "a clear window scores clearly: {scores:?}");
        assert!((scores.iter().sum::<f32>() - 1.0).abs() < 0.01, "softmax scores: {scores:?}");
        assert!(String::from_utf8_lossy(&report.output).ends_with(&format!("samples={count}")));
        assert!(
            report.logs.iter().any(|l| l.starts_with("fleet: wasi-nn: model 0 runs on cpu (ONNX Runtime")),
            "the report says where inference ran: {:?}",
            report.logs
        );
    }
}

#[test]
fn a_short_window_is_padded_with_its_first_value() {
    let report = classify(&executor(), Accelerator::Cpu, readings([5.0, 5.0, 9.0, 13.0])).unwrap();
    assert_eq!(class_of(&report.output).0, "rising");
    assert!(String::from_utf8_lossy(&report.output).ends_with("samples=4"));
}

#[test]
fn a_gpu_placement_without_a_gpu_provider_fails_instead_of_running_on_the_cpu() {
    let executor = executor();
    if executor.inference().unwrap().has_gpu_provider() {
        // A GPU build of ONNX Runtime: the GPU path is the bench's to measure.
        return;
    }
    let failure = classify(&executor, Accelerator::Gpu, readings([1.0, 2.0, 3.0])).unwrap_err();
    assert_eq!(failure.reason, FailReason::Trap, "{}", failure.message);
    // Exit code 5: the device refused the model (the job's documented code).
    assert_eq!(failure.message, "job returned 5");
    assert!(
        failure.report.logs.iter().any(|l| l.contains("wasi-nn: the model does not load on gpu")),
        "the note names the GPU: {:?}",
        failure.report.logs
    );
    assert!(!failure.report.logs.iter().any(|l| l.contains("runs on cpu")), "{:?}", failure.report.logs);
}

#[test]
fn without_inference_the_job_is_unsupported_with_a_reason() {
    let gateway = WasmtimeExecutor::new(config()).unwrap();
    let names = vec!["readings".to_string()];
    let job = Job::new(fleet_example_jobs::WINDOW_CLASSIFY).with_inputs(&names);
    let (message, _) = expect_failure(Backend::Wasmtime, gateway.run(&job, NoInputs), FailReason::Unsupported);
    assert!(message.contains("wasi_ephemeral_nn") && message.contains("offers no wasi-nn"), "{message}");

    let mut microcontroller = WasmiExecutor::new(config()).unwrap();
    let (message, _) = expect_failure(Backend::Wasmi, microcontroller.run(&job, NoInputs), FailReason::Unsupported);
    assert!(message.contains("offers no wasi-nn"), "{message}");
}

/// A module calling wasi-nn function `call` with the given arguments, then returning 0.
fn calling(call: &str, params: usize, args: &[i64]) -> Vec<u8> {
    let sig = "(param i32)".repeat(params);
    let args: String = args.iter().map(|a| format!("(i32.const {a})")).collect();
    wat::parse_str(format!(
        r#"(module
            (import "wasi_ephemeral_nn" "{call}" (func $f {sig} (result i32)))
            (memory (export "memory") 1)
            (func (export "run") (result i32) (drop (call $f {args})) (i32.const 0)))"#
    ))
    .unwrap()
}

#[test]
fn wasi_nn_calls_with_bad_pointers_trap_and_leave_the_executor_usable() {
    let executor = executor();
    let page = 65_536i64;
    let cases: [(&str, usize, Vec<i64>); 5] = [
        // The builder array runs off the end of memory.
        ("load", 5, vec![page - 4, 1, 1, 0, 0]),
        // The builder points at a model range outside memory (the array at 0 is zeros,
        // so write through the graph pointer first: out of bounds).
        ("load", 5, vec![0, 1, 1, 0, page]),
        ("load_by_name", 3, vec![page, 16, 0]),
        ("set_input", 3, vec![0, 0, page - 8]),
        ("get_output", 5, vec![0, 0, 0, page + 1, 0]),
    ];
    for (call, params, args) in cases {
        let module = calling(call, params, &args);
        let (message, _) =
            expect_failure(Backend::Wasmtime, executor.run(&Job::new(&module), NoInputs), FailReason::Trap);
        assert!(message.contains(&format!("wasi_ephemeral_nn.{call}: range")), "{call}: {message}");
    }
    // Bad handles are errors the job sees, not traps.
    for (call, params, args) in
        [("init_execution_context", 2, vec![7, 0]), ("compute", 1, vec![3]), ("get_output", 5, vec![9, 0, 0, 16, 32])]
    {
        let module = calling(call, params, &args);
        executor.run(&Job::new(&module), NoInputs).unwrap_or_else(|f| panic!("{call}: {f}"));
    }
    let report = classify(&executor, Accelerator::Cpu, readings([3.0; 20])).unwrap();
    assert_eq!(class_of(&report.output).0, "steady");
}

/// A module that loads `model` (bytes in its memory) through wasi-nn, sets input 0 to
/// one f32, and returns what `compute` returned (or 10 + the step that failed).
fn running_model(model: &[u8]) -> Vec<u8> {
    fn escaped(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("\\{b:02x}")).collect()
    }
    let mut low = vec![0u8; 84];
    low[0..4].copy_from_slice(&1024u32.to_le_bytes()); // builder: the model's address
    low[4..8].copy_from_slice(&(model.len() as u32).to_le_bytes()); // and length
    // The tensor record at 32: dims at 64 (one), f32, data at 80 (4 bytes).
    for (at, word) in [(32, 64u32), (36, 1), (40, 1), (44, 80), (48, 4), (64, 1)] {
        low[at..at + 4].copy_from_slice(&word.to_le_bytes());
    }
    let pages = (1024 + model.len()).div_ceil(65_536);
    wat::parse_str(format!(
        r#"(module
            (import "wasi_ephemeral_nn" "load" (func $load (param i32 i32 i32 i32 i32) (result i32)))
            (import "wasi_ephemeral_nn" "init_execution_context" (func $init (param i32 i32) (result i32)))
            (import "wasi_ephemeral_nn" "set_input" (func $set (param i32 i32 i32) (result i32)))
            (import "wasi_ephemeral_nn" "compute" (func $compute (param i32) (result i32)))
            (memory (export "memory") {pages})
            (data (i32.const 0) "{low}")
            (data (i32.const 1024) "{model}")
            (func (export "run") (result i32)
                (if (call $load (i32.const 0) (i32.const 1) (i32.const 1) (i32.const 0) (i32.const 16))
                    (then (return (i32.const 10))))
                (if (call $init (i32.load (i32.const 16)) (i32.const 20)) (then (return (i32.const 11))))
                (if (call $set (i32.load (i32.const 20)) (i32.const 0) (i32.const 32)) (then (return (i32.const 12))))
                (call $compute (i32.load (i32.const 20)))))"#,
        low = escaped(&low),
        model = escaped(model),
    ))
    .unwrap()
}

/// A model that never finishes (`fixtures/spin.onnx`: a Loop of 2^62 trips).
const SPIN: &[u8] = include_bytes!("../fixtures/spin.onnx");

/// Runs `f` on a thread and waits for it, failing (not hanging) if the inference was
/// never cut. A hang guard, not a timing assertion.
fn within_hang_guard<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(120)).expect("hang guard: the running inference was never cut")
}

#[test]
fn the_wall_clock_bound_and_a_stop_cut_a_running_inference() {
    let spin = running_model(SPIN);
    let executor = Arc::new(executor());

    let (ex, module) = (executor.clone(), spin.clone());
    let timed = within_hang_guard(move || {
        let limits = fleet_schemas::Limits { fuel: 0, memory_pages: 0, timeout_ms: 300 };
        ex.run(&Job::new(&module).with_limits(limits), NoInputs)
    });
    let (message, report) = expect_failure(Backend::Wasmtime, timed, FailReason::Timeout);
    assert!(message.contains("300 ms"), "{message}");
    assert!(report.logs.iter().any(|l| l.contains("model 0 runs on cpu")), "{:?}", report.logs);

    let stop = fleet_executor::StopSignal::new();
    let (ex, module, signal) = (executor.clone(), spin, stop.clone());
    let run =
        std::thread::spawn(move || within_hang_guard(move || ex.run(&Job::new(&module).with_stop(signal), NoInputs)));
    std::thread::sleep(std::time::Duration::from_millis(200));
    stop.stop();
    let (message, _) = expect_failure(Backend::Wasmtime, run.join().unwrap(), FailReason::Timeout);
    assert_eq!(message, "stopped by the agent");

    // The same model-running module with a model that finishes returns 0.
    let quick = running_model(fleet_example_jobs::WINDOW_CLASSIFIER_ONNX);
    let failure = executor.run(&Job::new(&quick), NoInputs).unwrap_err();
    // window-classifier wants [1, 16], not [1]: the run is refused, not the call trapped.
    assert_eq!(failure.message, "job returned 5", "{:?}", failure.report.logs);
    assert!(failure.report.logs.iter().any(|l| l.contains("wasi-nn: the run failed")), "{:?}", failure.report.logs);
}
