//! `window-classify`: classifies the latest window of a sensor as steady, rising or
//! falling with a small ONNX model, through wasi-nn; outputs
//! `class=NAME scores=STEADY,RISING,FALLING samples=N`.
//!
//! The example of an inference job. It reads the data input `readings` (CSV lines
//! `timestamp,value`, the format `csv-summary` reads), keeps the last 16 values, and
//! runs `model/window-classifier.onnx` (built by `model/build_model.py`, 487 bytes,
//! carried inside the module) on them. Where the model runs, CPU or GPU, is the
//! device's choice; the module does not change. A window shorter than 16 samples is
//! padded with its first value.
//!
//! Exit codes: 2 = input `readings` not available, 3 = read error, 4 = no readings,
//! 5 = the device has no inference backend for ONNX (or refused the model), 6 = the
//! run failed, 7 = output refused.
#![no_std]

use fleet_job::nn::{Encoding, Graph, NnError, Target};
use fleet_job::{Input, log, output};

/// The classifier, in ONNX.
const MODEL: &[u8] = include_bytes!("../model/window-classifier.onnx");
/// Samples per window (the model's input width).
const WINDOW: usize = 16;
/// The model's classes, in output order.
const CLASSES: [&str; 3] = ["steady", "rising", "falling"];
/// Lines longer than this are skipped.
const MAX_LINE: usize = 128;

/// The last [`WINDOW`] values seen, oldest first once full.
struct Window {
    values: [f32; WINDOW],
    next: usize,
    seen: usize,
}

impl Window {
    fn push_line(&mut self, line: &[u8]) {
        let Ok(line) = core::str::from_utf8(line) else { return };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return;
        }
        if let Some(v) = line.split_once(',').and_then(|(_, v)| v.trim().parse::<f32>().ok()).filter(|v| v.is_finite())
        {
            self.values[self.next] = v;
            self.next = (self.next + 1) % WINDOW;
            self.seen += 1;
        }
    }

    /// The window in time order, padded at the front with its oldest value.
    fn ordered(&self) -> [f32; WINDOW] {
        let mut out = [0f32; WINDOW];
        if self.seen >= WINDOW {
            for (i, slot) in out.iter_mut().enumerate() {
                *slot = self.values[(self.next + i) % WINDOW];
            }
        } else {
            let pad = WINDOW - self.seen;
            for (i, slot) in out.iter_mut().enumerate() {
                *slot = self.values[i.saturating_sub(pad)];
            }
        }
        out
    }
}

fn read_window() -> Result<Window, i32> {
    let Some(mut input) = Input::open("readings") else {
        log!("data input `readings` is not available");
        return Err(2);
    };
    let mut window = Window { values: [0.0; WINDOW], next: 0, seen: 0 };
    input
        .for_each_line::<MAX_LINE>(|line| {
            if let Ok(line) = line {
                window.push_line(line);
            }
        })
        .map_err(|_| 3)?;
    Ok(window)
}

fn classify(window: &[f32; WINDOW]) -> Result<[f32; 3], (NnError, i32)> {
    let graph = Graph::load(MODEL, Encoding::Onnx, Target::Cpu).map_err(|e| (e, 5))?;
    let mut ctx = graph.context().map_err(|e| (e, 6))?;
    ctx.set_input_f32(0, &[1, WINDOW as u32], window).map_err(|e| (e, 6))?;
    ctx.compute().map_err(|e| (e, 6))?;
    let mut scores = [0f32; 3];
    let n = ctx.output_f32(0, &mut scores).map_err(|e| (e, 6))?;
    if n != scores.len() {
        return Err((NnError::InvalidArgument, 6));
    }
    Ok(scores)
}

fn main() -> Result<(), i32> {
    let window = read_window()?;
    if window.seen == 0 {
        log!("no readings in `readings`");
        return Err(4);
    }
    let scores = classify(&window.ordered()).map_err(|(error, code)| {
        log!("inference failed: {error:?}");
        code
    })?;
    let mut best = 0;
    for (i, score) in scores.iter().enumerate() {
        if *score > scores[best] {
            best = i;
        }
    }
    log!("classified {} samples as {}", window.seen.min(WINDOW), CLASSES[best]);
    let ok = output!(
        "class={} scores={:.3},{:.3},{:.3} samples={}",
        CLASSES[best],
        scores[0],
        scores[1],
        scores[2],
        window.seen
    );
    if ok { Ok(()) } else { Err(7) }
}

fleet_job::entry!(main);
