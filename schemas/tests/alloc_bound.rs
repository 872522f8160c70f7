//! Memory bounds on unverified input, measured with a counting allocator (in its own
//! test binary, so nothing else allocates meanwhile).
#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use fleet_schemas::*;

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts bytes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
        PEAK.fetch_max(now, Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Extra bytes allocated at the peak of `f`.
fn peak_during(f: impl FnOnce()) -> usize {
    let base = CURRENT.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    f();
    PEAK.load(Ordering::SeqCst) - base
}

/// A near-limit, unsigned envelope whose job holds 65,535 empty argument strings.
fn list_bomb() -> Vec<u8> {
    let mut body = b"FENV".to_vec();
    let prefix = (1u16, KeyId([0; 8]), 0u64, 0u64, "gw-001", 1u64, 0u8, 1u32, JobId([5; 16]));
    body.extend(postcard::to_allocvec(&prefix).unwrap());
    body.extend_from_slice(&[0x00, 0x00, 0x00]); // inline module (empty), entry ""
    body.extend_from_slice(&[0xff, 0xff, 0x03]); // 65,535 args...
    body.resize(fleet_schemas::limits::MAX_ENVELOPE_BYTES - 80, 0); // ...each the empty string
    SignedMessage { body, signature: SignatureBytes([0; 64]) }.to_bytes().unwrap()
}

#[test]
fn labelling_and_refusing_unverified_envelopes_costs_no_memory_proportional_to_their_lists() {
    let bytes = list_bomb();
    assert!(bytes.len() <= fleet_schemas::limits::MAX_ENVELOPE_BYTES);

    // The bomb is real: decoding the whole unsigned envelope would cost megabytes.
    let naive = peak_during(|| {
        let signed = SignedMessage::from_bytes(&bytes).unwrap();
        let _ = postcard::from_bytes::<Envelope>(&signed.body[4..]);
    });
    assert!(naive > 1_000_000, "naive decode peaked at {naive} bytes");

    // Labelling a rejection reads only the fixed prefix.
    let mut claimed = (JobId::NIL, 0);
    let label = peak_during(|| claimed = fleet_schemas::verify::claimed_execution(&bytes));
    assert_eq!(claimed, (JobId([5; 16]), 1));
    assert!(label < 1024, "labelling peaked at {label} bytes");

    // Verification refuses it (unknown key) before decoding the body.
    let ring = KeyRing::new(vec![Trusted::of_signing_key(&SigningKey::from_bytes(&[1; 32]))]).unwrap();
    let device = DeviceId::new("gw-001").unwrap();
    let mut outcome = None;
    let verify = peak_during(|| outcome = Some(verify_envelope(&bytes, &ring, &device, None, &ReplayState::default())));
    assert!(matches!(outcome, Some(Err(Rejection::UnknownKey { .. }))));
    assert!(verify < 1024, "verification peaked at {verify} bytes");
}
