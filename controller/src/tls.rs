//! The controller's own certificate authority and the API's certificate.
//!
//! An operator who installs `fleetctl serve` should get an encrypted API without first
//! running a PKI. So on its first start `serve` makes a CA (ECDSA P-256, key in
//! `DATA/tls/ca.key`, mode 0600) and at every start signs a certificate for the API with
//! it, for `localhost`, the loopback addresses, the address the API listens on and every
//! `--api-name`. Clients trust `DATA/tls/ca.pem` (`fleetctl login URL --ca FILE`), which
//! stays the same across restarts and new names. An operator with a PKI of their own
//! gives `--api-cert` and `--api-key` instead.
//!
//! The CA certificate is re-made from its key and fixed parameters rather than parsed
//! back from its file: a certificate signed by the re-made one names the same issuer and
//! verifies under the same key, so it chains to the `ca.pem` clients hold.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, pem::PemObject as _};

/// Why the API's TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// Making or reading a key or certificate failed.
    #[error("{0}")]
    Cert(String),
}

/// The API's TLS: the server configuration, and where the CA clients trust lives.
pub struct ApiTls {
    /// What the listener hands rustls.
    pub config: Arc<rustls::ServerConfig>,
    /// The CA certificate clients trust (`DATA/tls/ca.pem`), or the operator's chain.
    pub ca_file: PathBuf,
}

/// The crypto provider of every TLS endpoint of the controller: ring.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io { path: path.to_path_buf(), source }
}

fn cert_error(e: impl std::fmt::Display) -> TlsError {
    TlsError::Cert(e.to_string())
}

fn ca_params() -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_error)?;
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "fleet");
    name.push(DnType::CommonName, "fleet controller CA");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

/// The controller's CA in `tls_dir` (made on first use): its key and certificate.
fn load_or_make_ca(tls_dir: &Path) -> Result<(KeyPair, rcgen::Certificate), TlsError> {
    let key_path = tls_dir.join("ca.key");
    let cert_path = tls_dir.join("ca.pem");
    let key = match std::fs::read_to_string(&key_path) {
        Ok(pem) => KeyPair::from_pem(&pem).map_err(|e| TlsError::Cert(format!("{}: {e}", key_path.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = KeyPair::generate().map_err(cert_error)?;
            crate::datadir::write_secret(&key_path, key.serialize_pem().trim_end()).map_err(cert_error)?;
            key
        }
        Err(e) => return Err(io(&key_path)(e)),
    };
    let cert = ca_params()?.self_signed(&key).map_err(cert_error)?;
    if !cert_path.exists() {
        write_atomically(&cert_path, cert.pem().as_bytes())?;
    }
    Ok((key, cert))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// The names the API's certificate is for: localhost, the loopback addresses, the
/// address it listens on (unless it is the unspecified one) and the operator's names.
pub fn api_names(listen: std::net::SocketAddr, extra: &[String]) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    if !listen.ip().is_unspecified() {
        names.push(listen.ip().to_string());
    }
    names.extend(extra.iter().cloned());
    names.sort();
    names.dedup();
    names
}

/// The controller's CA in `tls_dir` (made if it is not there yet): the file devices and
/// clients trust.
pub fn ensure_ca(tls_dir: &Path) -> Result<PathBuf, TlsError> {
    crate::datadir::create_private_dir(tls_dir).map_err(cert_error)?;
    load_or_make_ca(tls_dir)?;
    Ok(tls_dir.join("ca.pem"))
}

/// The API's TLS from the controller's own CA in `tls_dir`, with a certificate for
/// `names` made now (`DATA/tls/api.pem` holds a copy, for inspection).
pub fn from_own_ca(tls_dir: &Path, names: &[String]) -> Result<ApiTls, TlsError> {
    let (chain, private) = own_certificate(tls_dir, names, "api.pem", "fleet controller API")?;
    Ok(ApiTls { config: server_config(chain, private)?, ca_file: tls_dir.join("ca.pem") })
}

/// The embedded broker's TLS (MQTT over TLS) from the controller's own CA, with a
/// certificate for `names` (`DATA/tls/mqtt.pem` holds a copy).
///
/// A client may present a certificate (mTLS): one that chains to the controller's CA is
/// accepted at the handshake, and the broker then asks the registry whose it is (see
/// [`crate::auth`]); a client without one logs in with its password as before.
pub fn broker_from_own_ca(tls_dir: &Path, names: &[String]) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let (chain, private) = own_certificate(tls_dir, names, "mqtt.pem", "fleet MQTT broker")?;
    let ca = chain.last().cloned().ok_or_else(|| TlsError::Cert("no CA in the broker's chain".into()))?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).map_err(cert_error)?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated()
        .build()
        .map_err(cert_error)?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(cert_error)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, private)
        .map_err(cert_error)?;
    Ok(Arc::new(config))
}

/// A device's client certificate (mTLS), signed by the controller's CA.
#[derive(Clone)]
pub struct DeviceCertificate {
    /// The certificate (PEM), its common name the device's id.
    pub cert_pem: String,
    /// Its private key (PEM, PKCS#8): the device's secret, never kept by the controller.
    pub key_pem: String,
    /// SHA-256 of the certificate's DER: what the registry keeps, and what the broker
    /// looks the device up by.
    pub sha256: [u8; 32],
}

impl std::fmt::Debug for DeviceCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceCertificate").field("sha256", &hex::encode(self.sha256)).finish_non_exhaustive()
    }
}

/// Issues a client certificate for `device` from the controller's CA in `tls_dir`.
///
/// The certificate names the device (common name, as AWS IoT's and mosquitto's
/// `use_identity_as_username` expect) and is for client authentication only. It is
/// revoked by the registry, not by a CRL: the embedded broker accepts a certificate only
/// while the registry holds its SHA-256 for an active device, so `device remove` or a
/// re-provision locks it out at once.
pub fn issue_device_certificate(tls_dir: &Path, device: &str) -> Result<DeviceCertificate, TlsError> {
    use sha2::Digest as _;
    crate::datadir::create_private_dir(tls_dir).map_err(cert_error)?;
    let (ca_key, ca_cert) = load_or_make_ca(tls_dir)?;
    let key = KeyPair::generate().map_err(cert_error)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_error)?;
    params.distinguished_name.push(DnType::OrganizationName, "fleet");
    params.distinguished_name.push(DnType::CommonName, device);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &ca_cert, &ca_key).map_err(cert_error)?;
    Ok(DeviceCertificate {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        sha256: sha2::Sha256::digest(cert.der()).into(),
    })
}

/// A certificate for another broker (mosquitto) from the controller's CA, as PEM files:
/// `cert` holds the chain (the broker's certificate, then the CA), `key` its private key
/// (mode 0600). Devices provisioned with `--tls` trust it as they trust the embedded one.
pub fn write_server_files(tls_dir: &Path, names: &[String], cert: &Path, key: &Path) -> Result<(), TlsError> {
    crate::datadir::create_private_dir(tls_dir).map_err(cert_error)?;
    let (ca_key, ca_cert) = load_or_make_ca(tls_dir)?;
    let server_key = KeyPair::generate().map_err(cert_error)?;
    let mut params = CertificateParams::new(names.to_vec()).map_err(cert_error)?;
    params.distinguished_name.push(DnType::CommonName, "fleet MQTT broker");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let server = params.signed_by(&server_key, &ca_cert, &ca_key).map_err(cert_error)?;
    write_atomically(cert, format!("{}{}", server.pem(), ca_cert.pem()).as_bytes())?;
    crate::datadir::write_secret(key, server_key.serialize_pem().trim_end()).map_err(cert_error)
}

/// A server certificate for `names` signed by the controller's CA: the chain and its key.
fn own_certificate(
    tls_dir: &Path,
    names: &[String],
    copy: &str,
    common_name: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    crate::datadir::create_private_dir(tls_dir).map_err(cert_error)?;
    let (ca_key, ca_cert) = load_or_make_ca(tls_dir)?;
    let key = KeyPair::generate().map_err(cert_error)?;
    let mut params = CertificateParams::new(names.to_vec()).map_err(cert_error)?;
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &ca_cert, &ca_key).map_err(cert_error)?;
    // A copy for inspection only: a full disk must not keep the API down.
    if let Err(error) = write_atomically(&tls_dir.join(copy), cert.pem().as_bytes()) {
        tracing::warn!(%error, copy, "cannot write a copy of a certificate");
    }
    let chain = vec![cert.der().clone(), ca_cert.der().clone()];
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok((chain, private))
}

/// The API's TLS from the operator's certificate chain and key (PEM files).
pub fn from_files(cert: &Path, key: &Path) -> Result<ApiTls, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| TlsError::Cert(format!("{}: {e}", cert.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Cert(format!("{}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(TlsError::Cert(format!("{}: no certificate in it", cert.display())));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Cert(format!("{}: {e}", key.display())))?;
    Ok(ApiTls { config: server_config(chain, private)?, ca_file: cert.to_path_buf() })
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(cert_error)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(cert_error)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration trusting only the CA (or chain) in `ca_file`: what `fleetctl`
/// and the tests use to reach the API.
pub fn client_config(ca_file: &Path) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        CertificateDer::pem_file_iter(ca_file).map_err(|e| TlsError::Cert(format!("{}: {e}", ca_file.display())))?
    {
        let cert = cert.map_err(|e| TlsError::Cert(format!("{}: {e}", ca_file.display())))?;
        roots.add(cert).map_err(cert_error)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(cert_error)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
