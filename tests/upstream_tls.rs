//! TLS to upstreams: verification against a configured CA and a
//! verification name, and client certificates for mTLS to backends.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::certs::*;
use common::*;
use rustls::pki_types::CertificateDer;

/// A TLS backend with a certificate for `backend.test` signed by `ca`,
/// answering "secure"; with `client_ca`, it demands a client certificate
/// signed by that CA.
async fn tls_backend(ca: &Ca, client_ca: Option<&Ca>, dir: &Path) -> SocketAddr {
    leaf(ca, &["backend.test"], dir, "backend");
    let chain = vec![CertificateDer::from_pem_file(dir.join("backend.pem")).expect("cert")];
    let key =
        rustls::pki_types::PrivateKeyDer::from_pem_file(dir.join("backend.key")).expect("key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(c) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(c.cert.der().clone()).expect("root");
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .expect("verifier");
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = Arc::new(builder.with_single_cert(chain, key).expect("server config"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from_static(b"secure")),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

fn upstream_tls_config(backend: SocketAddr, tls: &str) -> String {
    format!(
        "gateway: {{ workers: 1 }}\nlisteners:\n  - {{ name: main, address: 127.0.0.1:0 }}\nupstreams:\n  - name: secure\n    targets: [{{ address: '{backend}' }}]\n    tls: {tls}\nroutes:\n  - {{ name: r, upstream: secure }}\n"
    )
}

use rustls::pki_types::pem::PemObject;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_verifies_the_backend() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let ca = ca();
    std::fs::write(d.join("ca.pem"), ca.cert.pem()).expect("write ca");
    let other = crate::ca();
    std::fs::write(d.join("other-ca.pem"), other.cert.pem()).expect("write ca");
    let backend = tls_backend(&ca, None, d).await;
    let good = format!(
        "{{ ca: '{}/ca.pem', server_name: backend.test }}",
        d.display()
    );
    let gw = start(&upstream_tls_config(backend, &good));
    let a = addr(&gw, "main");
    assert_eq!(get(a, "/").await.body, "secure");
    // A backend whose certificate the CA did not sign is refused.
    apply(
        &gw,
        &upstream_tls_config(backend, &good.replace("/ca.pem", "/other-ca.pem")),
    )
    .expect("applies");
    assert_eq!(get(a, "/").await.status, 502);
    // So is a name the certificate does not cover.
    apply(
        &gw,
        &upstream_tls_config(backend, &good.replace("backend.test", "evil.test")),
    )
    .expect("applies");
    assert_eq!(get(a, "/").await.status, 502);
    // insecure_skip_verify accepts it (and logs a warning).
    apply(
        &gw,
        &upstream_tls_config(backend, "{ insecure_skip_verify: true }"),
    )
    .expect("applies");
    assert_eq!(get(a, "/").await.body, "secure");
    // Health probes speak TLS too: the target stays in rotation.
    let checked = upstream_tls_config(backend, &good).replace(
        "    tls:",
        "    health_check: { path: /, interval: 50ms, timeout: 40ms, unhealthy_threshold: 1 }\n    tls:",
    );
    apply(&gw, &checked).expect("applies");
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(get(a, "/").await.body, "secure");
    let err = apply(
        &gw,
        &upstream_tls_config(backend, "{ ca: '/missing/ca.pem' }"),
    )
    .expect_err("missing")
    .to_string();
    assert!(
        err.contains("upstreams[0].tls.ca") && err.contains("cannot read"),
        "{err}"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_mtls_presents_a_client_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let ca = ca();
    std::fs::write(d.join("ca.pem"), ca.cert.pem()).expect("write ca");
    leaf(&ca, &["gateway.test"], d, "client");
    let backend = tls_backend(&ca, Some(&ca), d).await;
    let base = format!("{{ ca: '{}/ca.pem', server_name: backend.test", d.display());
    let gw = start(&upstream_tls_config(backend, &format!("{base} }}")));
    let a = addr(&gw, "main");
    assert_eq!(
        get(a, "/").await.status,
        502,
        "the backend demands a client certificate"
    );
    let with_cert = format!(
        "{base}, client_certificate: {{ cert: '{0}/client.pem', key: '{0}/client.key' }} }}",
        d.display()
    );
    apply(&gw, &upstream_tls_config(backend, &with_cert)).expect("applies");
    assert_eq!(get(a, "/").await.body, "secure");
    gw.shutdown().await;
}
