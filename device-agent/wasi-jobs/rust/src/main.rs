//! `csv-summary` as a plain Rust program for WASI: reads `/inputs/readings` (CSV lines
//! `timestamp,value`) and prints `count=N min=X max=Y mean=Z skipped=S`, exactly as the
//! fleet-ABI example does. Blank lines and `#` comments are ignored; lines whose value is
//! not a number, or longer than 128 bytes, are skipped. Exit codes: 2 = input `readings`
//! not available, 3 = read error.

use std::io::{BufRead, BufReader};
use std::process::ExitCode;

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
        let Ok(line) = std::str::from_utf8(line) else {
            self.skipped += 1;
            return;
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return;
        }
        match line.split_once(',').and_then(|(_, value)| value.trim().parse::<f64>().ok()) {
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

fn main() -> ExitCode {
    let Ok(file) = std::fs::File::open("/inputs/readings") else {
        eprintln!("data input `readings` is not available");
        return ExitCode::from(2);
    };
    let mut stats = Stats::default();
    for line in BufReader::new(file).split(b'\n') {
        let Ok(line) = line else { return ExitCode::from(3) };
        if line.len() > MAX_LINE {
            stats.skipped += 1;
        } else {
            stats.line(&line);
        }
    }
    eprintln!("read {} readings, skipped {} lines", stats.count, stats.skipped);
    if stats.count == 0 {
        print!("count=0 skipped={}", stats.skipped);
    } else {
        let mean = stats.sum / stats.count as f64;
        print!("count={} min={} max={} mean={mean:.3} skipped={}", stats.count, stats.min, stats.max, stats.skipped);
    }
    ExitCode::SUCCESS
}
