//! Envelope verifications per second on this machine.
//!
//! Prints one row per figure: ours (the whole `verify_envelope`: size, framing,
//! header, key lookup, signature, decode, target/window/sequence checks) beside the
//! peer every envelope verifier pays for, a bare ed25519-dalek `verify_strict` over the
//! same bytes, so the ratio is the protocol's own overhead.
//!
//! `cargo bench -p fleet-schemas --bench verify [-- --quick]`
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use ed25519_dalek::Signature;
use fleet_schemas::*;

fn per_second(budget: Duration, mut op: impl FnMut()) -> f64 {
    for _ in 0..100 {
        op();
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        for _ in 0..64 {
            op();
        }
        n += 64;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn envelope(module_len: usize, key: &SigningKey, device: &DeviceId) -> Vec<u8> {
    let envelope = Envelope {
        version: ENVELOPE_VERSION,
        key_id: fleet_schemas::signed::public_key_of(key).0,
        issued_at: 1_790_000_000,
        not_after: 1_790_003_600,
        device_id: device.clone(),
        seq: 7,
        order: Order::Run {
            attempt: 1,
            job: Box::new(JobSpec {
                job_id: JobId([3; 16]),
                module: ModuleSource::Inline(vec![0x2a; module_len]),
                entry: "run".into(),
                args: vec!["--window".into(), "60".into()],
                limits: Limits { fuel: 1_000_000, memory_pages: 16, timeout_ms: 5_000 },
                requirements: Requirements { runtime: None, gpu: GpuRequirement::None, labels: BTreeMap::new() },
                inputs: vec![],
            }),
        },
    };
    SignedMessage::sign(&envelope, key).unwrap().to_bytes().unwrap()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let budget = Duration::from_millis(if quick { 300 } else { 2_000 });
    let key = SigningKey::from_bytes(&[0x11; 32]);
    let device = DeviceId::new("gw-001").unwrap();
    let ring = KeyRing::new(vec![Trusted::of_signing_key(&key)]).unwrap();
    let replay = ReplayState::default();
    let verifying = key.verifying_key();

    println!("{:<44} {:>14} {:>14} {:>7}  conditions", "figure", "ours /s", "peer /s", "ratio");
    for module_len in [64usize, 1024, 16 * 1024] {
        let bytes = envelope(module_len, &key, &device);
        let signed = SignedMessage::from_bytes(&bytes).unwrap();
        let signature = Signature::from_bytes(&signed.signature.0);
        assert!(verify_envelope(&bytes, &ring, &device, Some(1_790_000_100), &replay).is_ok());
        let ours = per_second(budget, || {
            black_box(verify_envelope(black_box(&bytes), &ring, &device, Some(1_790_000_100), &replay)).unwrap();
        });
        let peer = per_second(budget, || {
            black_box(verifying.verify_strict(black_box(&signed.body), &signature)).unwrap();
        });
        println!(
            "{:<44} {:>14.0} {:>14.0} {:>7.2}  envelope {} B, 1 core, peer = bare ed25519-dalek verify_strict",
            format!("envelope verifications, {module_len} B module"),
            ours,
            peer,
            ours / peer,
            bytes.len(),
        );
    }
}
