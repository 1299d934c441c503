//! TLS termination on a listener (rustls): certificates chosen by SNI, a
//! minimum protocol version, ALPN, and HSTS. Built once per snapshot from
//! PEM files; a reload (including one triggered by a changed certificate
//! file) swaps in new certificates for new connections without touching open
//! ones.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::config::{TlsDoc, UnknownSni};

/// A listener's compiled TLS settings.
#[derive(Debug)]
pub struct TlsSettings {
    /// The rustls configuration handed to every handshake.
    pub config: Arc<ServerConfig>,
    /// Certificate and key files, watched for changes.
    pub files: Vec<PathBuf>,
    /// The `Strict-Transport-Security` value, when HSTS is on.
    pub hsts: Option<HeaderValue>,
    /// The header that carries the client certificate identity upstream.
    pub client_cert_header: Option<HeaderName>,
}

/// Picks the certificate whose names (SANs, with wildcards) cover the
/// client's SNI name; the first certificate is the default, also for clients
/// that send no SNI, unless unknown names are rejected.
#[derive(Debug)]
struct SniResolver {
    certs: Vec<Arc<CertifiedKey>>,
    reject_unknown: bool,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let wanted = hello
            .server_name()
            .and_then(|n| ServerName::try_from(n).ok());
        if let Some(name) = wanted {
            let covers = |ck: &&Arc<CertifiedKey>| {
                ck.end_entity_cert()
                    .ok()
                    .and_then(|der| webpki::EndEntityCert::try_from(der).ok())
                    .is_some_and(|ee| ee.verify_is_valid_for_subject_name(&name).is_ok())
            };
            if let Some(ck) = self.certs.iter().find(covers) {
                return Some(ck.clone());
            }
        }
        if self.reject_unknown {
            // rustls then fails the handshake; it is counted and logged at debug level.
            return None;
        }
        self.certs.first().cloned()
    }
}

/// Logs a warning for a certificate outside its validity period: clients
/// will refuse it, but the configuration still loads (the operator may be
/// mid-rotation). Returns true when it warned.
pub fn warn_if_expired(cert: &CertificateDer<'_>, path: &Path) -> bool {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let Ok((_, parsed)) = X509Certificate::from_der(cert) else {
        return false;
    };
    if parsed.validity().is_valid() {
        return false;
    }
    tracing::warn!(
        certificate = %path.display(),
        not_after = %parsed.validity().not_after,
        "TLS certificate is outside its validity period; clients will refuse it"
    );
    true
}

/// A problem with the TLS settings: the field it concerns (relative to the
/// listener's `tls`) and what is wrong.
pub type TlsError = (String, String);

/// Loads the certificates and builds the rustls configuration. Relative file
/// paths are taken from `base` (the configuration file's folder).
/// A certificate chain with its key, loaded once per snapshot, and the files
/// it came from (watched for changes; none for inline PEM).
pub type LoadedCert = (Arc<CertifiedKey>, Vec<PathBuf>);

/// Whether a certificate or key setting holds the PEM text itself rather
/// than a file name.
fn is_inline_pem(s: &str) -> bool {
    s.trim_start().starts_with("-----BEGIN")
}

/// Loads one certificate chain and its key from files (relative to `base`)
/// or inline PEM text. Errors name the field (`cert` or `key`).
pub fn load_certificate(cert: &str, key: &str, base: &Path) -> Result<LoadedCert, TlsError> {
    let provider = rustls::crypto::ring::default_provider();
    let mut files = Vec::new();
    let (chain, cert_name) = if is_inline_pem(cert) {
        let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                (
                    "cert".to_string(),
                    format!("the inline PEM certificate cannot be read: {e}"),
                )
            })?;
        (chain, "the inline certificate".to_string())
    } else {
        let path = base.join(cert);
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| {
                (
                    "cert".to_string(),
                    format!("cannot read certificates from `{}`: {e}", path.display()),
                )
            })?;
        files.push(path.clone());
        (chain, format!("`{}`", path.display()))
    };
    if chain.is_empty() {
        return Err((
            "cert".into(),
            format!("{cert_name} holds no PEM certificate"),
        ));
    }
    let key = if is_inline_pem(key) {
        PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| {
            (
                "key".to_string(),
                format!("the inline PEM private key cannot be read: {e}"),
            )
        })?
    } else {
        let path = base.join(key);
        files.push(path.clone());
        PrivateKeyDer::from_pem_file(&path).map_err(|e| {
            (
                "key".to_string(),
                format!("cannot read a private key from `{}`: {e}", path.display()),
            )
        })?
    };
    warn_if_expired(&chain[0], Path::new(&cert_name));
    let ck = CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
        (
            "key".to_string(),
            format!("the key does not fit the certificate: {e}"),
        )
    })?;
    Ok((Arc::new(ck), files))
}

/// Loads the certificates and builds the rustls configuration. Relative file
/// paths are taken from `base` (the configuration file's folder). `shared`
/// are the top-level `certificates`, offered after the listener's own.
pub fn build(
    doc: &TlsDoc,
    base: &Path,
    http2: bool,
    shared: &[LoadedCert],
) -> Result<TlsSettings, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut certs = Vec::new();
    let mut files = Vec::new();
    if doc.certificates.is_empty() && shared.is_empty() {
        return Err((
            "certificates".into(),
            "TLS needs at least one certificate, like `- { cert: site.pem, key: site.key }`, or a top-level `certificates` entry".into(),
        ));
    }
    for (j, c) in doc.certificates.iter().enumerate() {
        let (ck, f) = load_certificate(&c.cert, &c.key, base)
            .map_err(|(field, msg)| (format!("certificates[{j}].{field}"), msg))?;
        certs.push(ck);
        files.extend(f);
    }
    for (ck, f) in shared {
        certs.push(ck.clone());
        files.extend(f.iter().cloned());
    }
    let versions: &[&'static rustls::SupportedProtocolVersion] = match doc.min_version.as_str() {
        "1.2" => &[&rustls::version::TLS13, &rustls::version::TLS12],
        "1.3" => &[&rustls::version::TLS13],
        other => {
            return Err((
                "min_version".into(),
                format!(
                    "`{other}` is not a TLS version this gateway offers; use \"1.2\" or \"1.3\""
                ),
            ))
        }
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| ("min_version".to_string(), e.to_string()))?;
    let mut client_cert_header = None;
    let builder = match &doc.client_auth {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let path = base.join(&ca.ca);
            files.push(path.clone());
            let mut roots = rustls::RootCertStore::empty();
            let bundle: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    (
                        "client_auth.ca".to_string(),
                        format!("cannot read `{}`: {e}", path.display()),
                    )
                })?;
            if bundle.is_empty() {
                return Err((
                    "client_auth.ca".into(),
                    format!("`{}` holds no PEM certificate", path.display()),
                ));
            }
            for c in bundle {
                roots
                    .add(c)
                    .map_err(|e| ("client_auth.ca".to_string(), e.to_string()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            let verifier = if ca.required {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier
                .build()
                .map_err(|e| ("client_auth.ca".to_string(), e.to_string()))?;
            if let Some(h) = &ca.forward_header {
                client_cert_header = Some(
                    HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).map_err(|_| {
                        (
                            "client_auth.forward_header".to_string(),
                            format!("`{h}` is not a valid header name"),
                        )
                    })?,
                );
            }
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(SniResolver {
        certs,
        reject_unknown: doc.unknown_sni == UnknownSni::Reject,
    }));
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    let hsts = doc.hsts.map(|d| {
        HeaderValue::from_str(&format!("max-age={}", d.0.as_secs()))
            .expect("digits are a valid header value")
    });
    Ok(TlsSettings {
        config: Arc::new(config),
        files,
        hsts,
        client_cert_header,
    })
}
