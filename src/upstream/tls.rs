//! TLS to upstreams: certificates verified against the system's roots or a
//! configured CA, a verification name (SNI) per upstream, an optional client
//! certificate for mTLS to the backend, and an explicit, logged
//! `insecure_skip_verify`. Built once per snapshot; the material's
//! fingerprint is part of the pool key, so rotated files build a new pool.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::config::UpstreamTlsDoc;

/// Compiled TLS settings of an upstream.
#[derive(Debug)]
pub struct UpstreamTls {
    /// The rustls client configuration.
    pub config: Arc<ClientConfig>,
    /// The name to send as SNI and verify; `None`: the target's host.
    pub server_name: Option<ServerName<'static>>,
    /// A hash of the settings and the files' contents.
    pub fingerprint: u64,
}

impl UpstreamTls {
    /// The name to verify for a target `host:port`.
    pub fn name_for(&self, address: &str) -> Option<ServerName<'static>> {
        if let Some(n) = &self.server_name {
            return Some(n.clone());
        }
        let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        ServerName::try_from(host.to_string()).ok()
    }
}

/// Accepts any certificate: for `insecure_skip_verify` only.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A problem with the settings: the field (under the upstream's `tls`) and what is wrong.
pub type TlsError = (String, String);

fn read(path: &Path, field: &str, hash: &mut DefaultHasher) -> Result<Vec<u8>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| {
        (
            field.to_string(),
            format!("cannot read `{}`: {e}", path.display()),
        )
    })?;
    bytes.hash(hash);
    Ok(bytes)
}

/// Builds the client configuration; relative paths are taken from `base`.
pub fn build(
    upstream: &str,
    doc: &UpstreamTlsDoc,
    base: &Path,
    http2: bool,
) -> Result<UpstreamTls, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut hash = DefaultHasher::new();
    (&doc.server_name, doc.insecure_skip_verify).hash(&mut hash);
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| (String::new(), e.to_string()))?;
    let builder = if doc.insecure_skip_verify {
        tracing::warn!(
            upstream,
            "TLS certificates of this upstream are NOT verified (insecure_skip_verify)"
        );
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
    } else {
        let mut roots = RootCertStore::empty();
        match &doc.ca {
            Some(ca) => {
                let bytes = read(&base.join(ca), "ca", &mut hash)?;
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
                    .collect::<Result<_, _>>()
                    .map_err(|e| ("ca".to_string(), format!("`{ca}` is not a PEM bundle: {e}")))?;
                if certs.is_empty() {
                    return Err(("ca".into(), format!("`{ca}` holds no PEM certificate")));
                }
                for c in certs {
                    roots.add(c).map_err(|e| {
                        (
                            "ca".to_string(),
                            format!("a certificate in `{ca}` is unusable: {e}"),
                        )
                    })?;
                }
            }
            None => {
                let native = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(native.certs);
                if roots.is_empty() {
                    return Err(("ca".into(), "no system root certificates were found; install ca-certificates or set `ca`".into()));
                }
            }
        }
        builder.with_root_certificates(roots)
    };
    let mut config = match &doc.client_certificate {
        None => builder.with_no_client_auth(),
        Some(c) => {
            let cert_bytes = read(&base.join(&c.cert), "client_certificate.cert", &mut hash)?;
            let key_bytes = read(&base.join(&c.key), "client_certificate.key", &mut hash)?;
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_bytes)
                .collect::<Result<_, _>>()
                .map_err(|e| ("client_certificate.cert".to_string(), e.to_string()))?;
            if chain.is_empty() {
                return Err((
                    "client_certificate.cert".into(),
                    format!("`{}` holds no PEM certificate", c.cert),
                ));
            }
            let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| {
                (
                    "client_certificate.key".to_string(),
                    format!("no private key in `{}`: {e}", c.key),
                )
            })?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                (
                    "client_certificate.key".to_string(),
                    format!("the key does not fit the certificate: {e}"),
                )
            })?
        }
    };
    config.alpn_protocols = vec![if http2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    let server_name = match &doc.server_name {
        Some(n) => Some(ServerName::try_from(n.clone()).map_err(|_| {
            (
                "server_name".to_string(),
                format!("`{n}` is not a DNS name or IP address"),
            )
        })?),
        None => None,
    };
    Ok(UpstreamTls {
        config: Arc::new(config),
        server_name,
        fingerprint: hash.finish(),
    })
}
