//! What a TLS 1.3 client costs the board, measured: the two link probes log in to the
//! fleet's broker as the golden device, one over the plain link and one inside a TLS
//! session (embedded-tls) to the broker's MQTT over TLS port, whose certificate they
//! check against the fleet's CA. Both logins must be accepted; a probe holding another
//! CA must fail its handshake and never log in. The report (with `--nocapture`) is the
//! two images' flash, static RAM and heap peak, and their difference: what TLS adds.

use std::sync::Arc;
use std::time::Duration;

use fleet_broker::rustls;
use fleet_firmware_qemu_tests::fleet::{DEVICE_PASSWORD, Fleet};
use fleet_firmware_qemu_tests::size::measure;
use fleet_firmware_qemu_tests::{field, firmware, qemu_command, run_to_end, scratch_dir};

/// A CA and a broker certificate for `localhost` signed by it, as the controller makes
/// them (ECDSA P-256): the server configuration and the CA's DER.
fn broker_tls() -> (Arc<rustls::ServerConfig>, Vec<u8>) {
    let ca_key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("a CA key: {e}"));
    let mut ca_params =
        rcgen::CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("CA params: {e}"));
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "fleet test CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let ca = ca_params.self_signed(&ca_key).unwrap_or_else(|e| panic!("the CA certificate: {e}"));
    let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("a broker key: {e}"));
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap_or_else(|e| panic!("broker params: {e}"));
    params.distinguished_name.push(rcgen::DnType::CommonName, "fleet MQTT broker");
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap_or_else(|e| panic!("the broker certificate: {e}"));
    let chain = vec![cert.der().clone(), ca.der().clone()];
    let private = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| panic!("TLS versions: {e}"))
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .unwrap_or_else(|e| panic!("the server configuration: {e}"));
    (Arc::new(config), ca.der().to_vec())
}

/// Runs probe `image` against `port` with the host files in a fresh directory.
fn probe(image: &str, port: u16, ca: Option<&[u8]>) -> fleet_firmware_qemu_tests::Run {
    let dir = scratch_dir(image);
    std::fs::write(dir.join("probe-password.txt"), DEVICE_PASSWORD)
        .unwrap_or_else(|e| panic!("writing the password file: {e}"));
    if let Some(ca) = ca {
        std::fs::write(dir.join("probe-ca.der"), ca).unwrap_or_else(|e| panic!("writing the CA file: {e}"));
    }
    run_to_end(qemu_command(&firmware(image), &dir, &format!("tcp:127.0.0.1:{port}")), Duration::from_secs(120))
}

#[test]
fn a_board_logs_in_over_tls_and_the_client_costs_this_much() {
    let (server, ca) = broker_tls();
    let fleet = Fleet::start_with_tls(Some(server));
    let tls_port = fleet.tls_port.unwrap_or_else(|| panic!("the broker has no TLS port"));

    let plain = probe("plain_probe", fleet.port, None);
    assert!(plain.passed(), "{plain}");
    let tls = probe("tls_probe", tls_port, Some(&ca));
    assert!(tls.passed(), "{tls}");
    assert!(tls.stdout.contains("CONNACK code Some(0)"), "{tls}");

    // Another CA: the broker's certificate does not chain to it, and nothing is sent.
    let (_, other_ca) = broker_tls();
    let refused = probe("tls_probe", tls_port, Some(&other_ca));
    assert!(!refused.passed(), "a probe with another CA logged in:\n{refused}");
    assert!(refused.stderr.contains("TLS handshake failed"), "{refused}");

    let mut report = String::from("image         flash(text+rodata+data)  static RAM(data+bss)  heap peak  login\n");
    let mut figures = Vec::new();
    for (image, run) in [("plain_probe", &plain), ("tls_probe", &tls)] {
        let elf = firmware(image);
        let bytes = std::fs::read(&elf).unwrap_or_else(|e| panic!("cannot read {}: {e}", elf.display()));
        let sizes = measure(&bytes).unwrap_or_else(|e| panic!("cannot parse {}: {e}", elf.display()));
        let peak: u64 = field(&run.stdout, "heap: peak")
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no heap peak from {image}:\n{run}"));
        let login = run.stdout.lines().find(|l| l.starts_with("probe:")).unwrap_or("?");
        report += &format!("{image:<13} {:>8} B  {:>18} B  {peak:>7} B  {login}\n", sizes.flash(), sizes.static_ram());
        figures.push((sizes.flash(), peak));
    }
    let (flash, heap) = (figures[1].0 - figures[0].0, figures[1].1.saturating_sub(figures[0].1));
    report += &format!(
        "the TLS 1.3 client costs {flash} B of flash ({:.1} KiB) and {heap} B of heap at its peak (record buffers 16,640 + 4,096 B)\n",
        flash as f64 / 1024.0
    );
    eprintln!("{report}");
}
