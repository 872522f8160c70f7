//! `csv-summary`: reads the data input `readings` (CSV lines `timestamp,value`) and
//! outputs `count=N min=X max=Y mean=Z skipped=S`.
//!
//! The example of a job that reads device data. It streams the input through a small
//! buffer, so it runs in one page of memory whatever the file size. Blank lines and
//! `#` comments are ignored; lines whose value is not a number (a header, say) are
//! counted as skipped. Exit codes: 2 = input `readings` not available, 3 = read error.
#![no_std]

use fleet_job::{Input, log, output};

/// Lines longer than this are skipped.
const MAX_LINE: usize = 128;

#[derive(Default)]
struct Stats {
    count: u64,
    skipped: u64,
    min: f64,
    max: f64,
    sum: f64,
}

impl Stats {
    fn line(&mut self, line: &[u8]) {
        let Ok(line) = core::str::from_utf8(line) else {
            self.skipped += 1;
            return;
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return;
        }
        let value = line.split_once(',').and_then(|(_, value)| value.trim().parse::<f64>().ok());
        match value {
            Some(v) if v.is_finite() => {
                if self.count == 0 {
                    self.min = v;
                    self.max = v;
                } else {
                    self.min = self.min.min(v);
                    self.max = self.max.max(v);
                }
                self.count += 1;
                self.sum += v;
            }
            _ => self.skipped += 1,
        }
    }
}

fn main() -> Result<(), i32> {
    let Some(mut input) = Input::open("readings") else {
        log!("data input `readings` is not available");
        return Err(2);
    };
    let mut stats = Stats::default();
    input
        .for_each_line::<MAX_LINE>(|line| match line {
            Ok(line) => stats.line(line),
            Err(_) => stats.skipped += 1,
        })
        .map_err(|_| 3)?;
    log!("read {} readings, skipped {} lines", stats.count, stats.skipped);
    let ok = if stats.count == 0 {
        output!("count=0 skipped={}", stats.skipped)
    } else {
        let mean = stats.sum / stats.count as f64;
        output!("count={} min={} max={} mean={:.3} skipped={}", stats.count, stats.min, stats.max, mean, stats.skipped)
    };
    if ok { Ok(()) } else { Err(4) }
}

fleet_job::entry!(main);
