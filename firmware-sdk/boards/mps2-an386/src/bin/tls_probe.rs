//! Link probe, TLS: the golden device opens a TLS 1.3 session to the broker's MQTT over
//! TLS port over the UART link (embedded-tls: TLS_AES_128_GCM_SHA256, secp256r1, the
//! broker's certificate checked against the fleet's CA and the host name `localhost`),
//! logs in inside it (MQTT CONNECT, CONNACK), and exits 0 if the login is accepted.
//! The same image as `plain_probe.rs` plus the TLS client: the difference between the
//! two is what TLS costs the board (`qemu-tests/tests/tls_probe.rs` prints it).
//!
//! Host files: `probe-password.txt`, the device's MQTT password; `probe-ca.der`, the CA
//! certificate (DER) the broker's must chain to.
//!
//! The board has no random number generator: the session's key share comes from a
//! ChaCha20 stream seeded with semihosting's clocks (see `semihost::boot_entropy`),
//! which is fine for a measurement and not for a product; a real part seeds it from
//! its TRNG. Nor does it know the time at boot, so certificate dates are not checked.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec;

use embedded_tls::blocking::{TlsConnection, TlsContext};
use embedded_tls::pki::CertVerifier;
use embedded_tls::{Aes128GcmSha256, Certificate, CryptoProvider, NoClock, TlsConfig, TlsError, TlsVerifier};
use fleet_board_mps2_an386::{self as board, entry, probe, semihost};
use fleet_firmware_sdk::clock::Clock as _;
use rand_core::SeedableRng as _;

/// The largest server certificate the verifier holds (the broker's is about 600 B).
const CERT_BYTES: usize = 2048;

/// TLS record buffers: a TLS 1.3 server may send records of up to 16 KiB, and rustls
/// offers no smaller maximum fragment length, so the read side must hold a whole one.
const READ_RECORD_BYTES: usize = 16_640;
const WRITE_RECORD_BYTES: usize = 4_096;

struct Provider<'a> {
    rng: rand_chacha::ChaCha20Rng,
    verifier: CertVerifier<'a, Aes128GcmSha256, NoClock, CERT_BYTES>,
}

impl CryptoProvider for Provider<'_> {
    type CipherSuite = Aes128GcmSha256;
    type Signature = &'static [u8];

    fn rng(&mut self) -> impl embedded_tls::CryptoRngCore {
        &mut self.rng
    }

    fn verifier(&mut self) -> Result<&mut impl TlsVerifier<Aes128GcmSha256>, TlsError> {
        Ok(&mut self.verifier)
    }
}

#[entry]
fn main() -> ! {
    let Some(mut board) = board::init() else { semihost::exit(false) };
    let (Some(password), Some(ca)) =
        (probe::read_host_file(c"probe-password.txt"), probe::read_host_file(c"probe-ca.der"))
    else {
        semihost::eprintln(format_args!("probe: cannot read probe-password.txt and probe-ca.der"));
        semihost::exit(false)
    };
    let mut seed = [0u8; 32];
    seed[..16].copy_from_slice(&semihost::boot_entropy(b"tls key share 1"));
    seed[16..].copy_from_slice(&semihost::boot_entropy(b"tls key share 2"));
    let provider = Provider {
        rng: rand_chacha::ChaCha20Rng::from_seed(seed),
        verifier: CertVerifier::new(Certificate::X509(&ca[..])),
    };
    let mut read_buffer = vec![0u8; READ_RECORD_BYTES];
    let mut write_buffer = vec![0u8; WRITE_RECORD_BYTES];
    let config = TlsConfig::new().with_server_name("localhost");
    let started = board.clock.now_ms();
    let mut tls = TlsConnection::new(&mut board.uart, &mut read_buffer, &mut write_buffer);
    if let Err(error) = tls.open(TlsContext::new(&config, provider)) {
        semihost::eprintln(format_args!("probe: TLS handshake failed: {error:?}"));
        semihost::exit(false)
    }
    let handshake = board.clock.now_ms() - started;
    let connect = probe::connect_packet(fleet_schemas::golden::DEVICE_ID, password.trim_ascii());
    let sent = tls.write(&connect).and_then(|_| tls.flush());
    let mut connack = [0u8; 4];
    let mut got = 0;
    let mut result = sent;
    while result.is_ok() && got < connack.len() {
        match tls.read(&mut connack[got..]) {
            Ok(0) => result = Err(TlsError::ConnectionClosed),
            Ok(n) => got += n,
            Err(error) => result = Err(error),
        }
    }
    if let Err(error) = result {
        semihost::eprintln(format_args!("probe: MQTT over TLS failed: {error:?}"));
        semihost::exit(false)
    }
    let took = board.clock.now_ms() - started;
    let code = probe::connack_code(&connack);
    semihost::println(format_args!(
        "probe: TLS handshake in {handshake} ms, login in {took} ms, CONNACK code {code:?}"
    ));
    let heap = board::heap_stats();
    semihost::println(format_args!("heap: peak {} of {} bytes", heap.peak, heap.size));
    semihost::exit(code == Some(0))
}
