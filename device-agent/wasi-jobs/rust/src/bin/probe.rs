//! `probe` as a plain Rust program for WASI (and, built for `wasm32-wasip2`, as a WASI 0.2
//! component): what a job must not be able to do, and the bounds, by its first argument.
//!
//! * `escape`: reads paths outside its inputs and tries to create a file among them;
//!   prints `PATH: read` or `PATH: error` for each, then `create: ok` or `create: error`;
//! * `loop`: spins until a bound stops it;
//! * `bomb`: allocates a MiB at a time until the allocator gives up;
//! * `print N`: prints N bytes of `x` to stdout;
//! * `exit N`: exits with code N.

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match (args.get(1).map(String::as_str), args.get(2).and_then(|n| n.parse::<u64>().ok())) {
        (Some("escape"), _) => {
            for path in ["/etc/passwd", "/inputs/../etc/passwd", "../etc/passwd", "/proc/self/environ"] {
                let verdict = if std::fs::read(path).is_ok() { "read" } else { "error" };
                println!("{path}: {verdict}");
            }
            let verdict = if std::fs::File::create("/inputs/new").is_ok() { "ok" } else { "error" };
            println!("create: {verdict}");
            ExitCode::SUCCESS
        }
        (Some("loop"), _) => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        (Some("bomb"), _) => {
            let mut held: Vec<Vec<u8>> = Vec::new();
            loop {
                held.push(vec![1u8; 1 << 20]);
                eprintln!("holding {} MiB", held.len());
            }
        }
        (Some("print"), Some(n)) => {
            let mut out = std::io::stdout().lock();
            for _ in 0..n {
                if out.write_all(b"x").is_err() {
                    return ExitCode::from(5);
                }
            }
            ExitCode::SUCCESS
        }
        (Some("exit"), Some(code)) => ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX)),
        _ => {
            eprintln!("usage: probe escape | loop | bomb | print N | exit N");
            ExitCode::from(64)
        }
    }
}
