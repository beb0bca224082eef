//! TLS for QUIC: the hub's certificate (made on first start and kept in the data directory),
//! the server configuration, and a client configuration that trusts exactly one pinned
//! certificate (a self-signed hub has no authority to chain to; like an SSH host key, the
//! device keeps the hub's certificate and accepts no other).

use std::{path::Path, sync::Arc};

use rustls::{
    DigitallySignedStruct, DistinguishedName, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms},
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime},
    server::danger::{ClientCertVerified, ClientCertVerifier},
};

/// ALPN protocol name of protocol version 1, for devices.
pub const ALPN: &[u8] = b"switchboard/1";
/// ALPN protocol name of protocol version 1, for hub links (mutual TLS).
pub const HUB_ALPN: &[u8] = b"switchboard-hub/1";

/// A certificate's pin: the SHA-256 of its DER, lower-case hex. Hubs know each other by pin.
pub fn pin(cert: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(cert).iter().map(|b| format!("{b:02x}")).collect()
}

/// Failures setting up TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Reading or writing the certificate files failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Making the certificate failed.
    #[error("cannot make a certificate: {0}")]
    Generate(String),
    /// rustls or quinn refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The hub's certificate and private key, both DER.
pub struct Identity {
    /// The certificate.
    pub cert: CertificateDer<'static>,
    /// Its private key (PKCS #8).
    pub key: PrivateKeyDer<'static>,
}

/// Loads `dir/cert.der` and `dir/key.der`, making a self-signed pair on first start that names
/// `localhost` and `switchboard-hub` only.
pub fn load_or_create(dir: &Path) -> Result<Identity, TlsError> {
    load_or_create_named(dir, &[])
}

/// The hub's identity in `config`'s data directory: a certificate made on first start names
/// the hub (`[hub] name`) and its domains besides `localhost` and `switchboard-hub`, so that
/// tools that show a certificate show whose it is. Devices and peers trust it by its pin, not
/// by a name (see docs/protocol.md, Transport).
pub fn load_or_create_for(config: &crate::config::Config) -> Result<Identity, TlsError> {
    let mut names = vec![config.hub.name.clone()];
    names.extend(config.hub.domains.iter().cloned());
    load_or_create_named(&config.data_dir().join("tls"), &names)
}

/// Whether `name` can be a DNS name in a certificate: labels of letters, digits and hyphens.
fn dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn load_or_create_named(dir: &Path, extra: &[String]) -> Result<Identity, TlsError> {
    let cert_path = dir.join("cert.der");
    let key_path = dir.join("key.der");
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Io { path, source }
    };
    if !cert_path.exists() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut names = vec!["localhost".to_string(), "switchboard-hub".to_string()];
        for name in extra.iter().map(|n| n.to_ascii_lowercase()) {
            if dns_name(&name) && !names.contains(&name) {
                names.push(name);
            }
        }
        let made = rcgen::generate_simple_self_signed(names)
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        // The key first: the certificate's presence says both are in place. Both are synced:
        // a certificate lost to a power cut left an empty file and a hub that would not start
        // (found by the power-loss crash loop, loadgen/tests/crash_loop.rs).
        write_private(&key_path, &made.signing_key.serialize_der()).map_err(io(&key_path))?;
        write_durable(&cert_path, made.cert.der(), 0o644).map_err(io(&cert_path))?;
        tracing::info!(path = %cert_path.display(), "made a self-signed certificate");
    }
    let cert = std::fs::read(&cert_path).map_err(io(&cert_path))?;
    let key = std::fs::read(&key_path).map_err(io(&key_path))?;
    Ok(Identity {
        cert: CertificateDer::from(cert),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
    })
}

/// Writes a file only its owner can read, durably (see [`write_durable`]).
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_durable(path, bytes, 0o600)
}

/// Writes `bytes` to `path` with `mode` so that after a crash or a power cut the file is
/// either whole or as it was: written to a temporary file, synced, renamed over `path`, and
/// the directory synced so that the rename itself is on disk.
pub(crate) fn write_durable(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::File::open(dir)?.sync_all()
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls server side for QUIC: TLS 1.3; ALPN `switchboard/1` for devices (no client
/// certificate) and `switchboard-hub/1` for hub links, whose client certificate is asked for and
/// its signature checked here, its pin by the link code against the known peers.
pub fn server_crypto(
    identity: &Identity,
) -> Result<quinn::crypto::rustls::QuicServerConfig, TlsError> {
    let provider = provider();
    let verifier =
        Arc::new(AnyClientCert { algorithms: provider.signature_verification_algorithms });
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![identity.cert.clone()], identity.key.clone_key())
        .map_err(|e| TlsError::Config(e.to_string()))?;
    tls.alpn_protocols = vec![ALPN.to_vec(), HUB_ALPN.to_vec()];
    tls.max_early_data_size = 0;
    quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| TlsError::Config(e.to_string()))
}

/// The rustls client side of a hub link: presents this hub's certificate and accepts only a
/// peer whose certificate has the pin `peer_pin`.
pub fn hub_client_crypto(
    identity: &Identity,
    peer_pin: &str,
) -> Result<quinn::crypto::rustls::QuicClientConfig, TlsError> {
    let provider = provider();
    let verifier = Arc::new(PinnedCert {
        pin: peer_pin.to_ascii_lowercase(),
        algorithms: provider.signature_verification_algorithms,
    });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(vec![identity.cert.clone()], identity.key.clone_key())
        .map_err(|e| TlsError::Config(e.to_string()))?;
    tls.alpn_protocols = vec![HUB_ALPN.to_vec()];
    quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| TlsError::Config(e.to_string()))
}

/// Asks every client for a certificate without requiring one (devices have none); checks the
/// handshake signature of one that is given, so that its holder has the key. Whose it is (the
/// pin) is the hub link's to decide.
#[derive(Debug)]
struct AnyClientCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not used".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The rustls client side for QUIC that accepts only the certificate `pinned` (DER).
pub fn client_crypto(pinned: Vec<u8>) -> Result<quinn::crypto::rustls::QuicClientConfig, TlsError> {
    let provider = provider();
    let verifier = Arc::new(PinnedCert {
        pin: pin(&pinned),
        algorithms: provider.signature_verification_algorithms,
    });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| TlsError::Config(e.to_string()))
}

/// Accepts the one certificate whose pin (SHA-256 of the DER) it holds, and checks the
/// handshake signatures against that certificate's key.
#[derive(Debug)]
struct PinnedCert {
    pin: String,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if pin(end_entity.as_ref()) == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("the hub's certificate is not the pinned one".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not used".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contains(haystack: &[u8], needle: &str) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
    }

    #[test]
    fn a_new_certificate_names_the_hub_and_its_domains_and_skips_what_is_no_dns_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut config =
            crate::config::Config { data_dir: dir.path().to_path_buf(), ..Default::default() };
        config.hub.name = "hub-one.example.net".into();
        config.hub.domains = vec!["Example.org".into(), "not a name".into()];
        let identity = load_or_create_for(&config).unwrap();
        let der = identity.cert.as_ref();
        for name in ["localhost", "switchboard-hub", "hub-one.example.net", "example.org"] {
            assert!(contains(der, name), "{name} is not in the certificate");
        }
        assert!(!contains(der, "not a name"));
        // Made once: the same certificate (and pin) on the next load, whatever the names.
        config.hub.domains.clear();
        assert_eq!(load_or_create_for(&config).unwrap().cert.as_ref(), der);
    }
}
