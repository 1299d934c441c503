//! Certificates for TLS tests: a CA (rcgen), leaf certificates signed by
//! it written as PEM files, rustls client configurations, and a TLS client
//! that sends one HTTP/1.1 request.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A test certificate authority.
pub struct Ca {
    pub cert: rcgen::Certificate,
    pub key: KeyPair,
}

pub fn ca() -> Ca {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // A name of its own: OpenSSL (curl) takes a leaf whose issuer equals its
    // subject for self-signed, and rcgen's default name is the same for both.
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Portcullis Test CA");
    Ca {
        cert: params.self_signed(&key).expect("ca"),
        key,
    }
}

/// Writes a leaf certificate for `names`, signed by `ca`, as `<stem>.pem` and `<stem>.key`.
pub fn leaf(ca: &Ca, names: &[&str], dir: &Path, stem: &str) -> CertificateDer<'static> {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    signed_leaf(
        ca,
        CertificateParams::new(names).expect("params"),
        dir,
        stem,
    )
}

/// Like [`leaf`], for a certificate with its own subject `CN=<cn>,O=Example` and no SANs.
pub fn leaf_with_subject(ca: &Ca, cn: &str, dir: &Path, stem: &str) -> CertificateDer<'static> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "Example");
    signed_leaf(ca, params, dir, stem)
}

pub fn signed_leaf(
    ca: &Ca,
    params: CertificateParams,
    dir: &Path,
    stem: &str,
) -> CertificateDer<'static> {
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &ca.cert, &ca.key).expect("leaf");
    std::fs::write(dir.join(format!("{stem}.pem")), cert.pem()).expect("write cert");
    std::fs::write(dir.join(format!("{stem}.key")), key.serialize_pem()).expect("write key");
    cert.der().clone()
}

/// A folder with a CA (`ca.pem`) and the two server certificates the
/// standard [`config`] serves: `api.example.test` and `*.wild.test`.
pub fn server_certs() -> (
    tempfile::TempDir,
    Ca,
    CertificateDer<'static>,
    CertificateDer<'static>,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = ca();
    std::fs::write(dir.path().join("ca.pem"), ca.cert.pem()).expect("write ca");
    let api = leaf(&ca, &["api.example.test"], dir.path(), "api");
    let wild = leaf(&ca, &["*.wild.test"], dir.path(), "wild");
    (dir, ca, api, wild)
}

pub fn client_config(
    ca: &Ca,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).expect("root");
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

pub type Tls = tokio_rustls::client::TlsStream<TcpStream>;

pub async fn connect(
    addr: SocketAddr,
    sni: &str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<Tls> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_string()).expect("name");
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// Sends one keep-alive GET over `tls` and returns the response head and body.
pub async fn get_over(tls: &mut Tls, host: &str, path: &str) -> String {
    tls.write_all(format!("GET {path} HTTP/1.1\r\nhost: {host}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf))
            .await
            .expect("read in time")
            .expect("read");
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out);
        if let Some(head_end) = text.find("\r\n\r\n") {
            let len: usize = text[..head_end]
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if out.len() >= head_end + 4 + len {
                return text.into_owned();
            }
        }
        if n == 0 {
            return String::from_utf8_lossy(&out).into_owned();
        }
    }
}

pub fn client_with_cert(ca: &Ca, dir: &Path, stem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).expect("root");
    let chain = vec![CertificateDer::from_pem_file(dir.join(format!("{stem}.pem"))).expect("cert")];
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(dir.join(format!("{stem}.key")))
        .expect("key");
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .expect("client cert"),
    )
}
