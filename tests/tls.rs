//! TLS termination: certificates by SNI (exact, wildcard, default), the
//! forwarded scheme, HSTS, the minimum version, certificate swaps on reload
//! without dropping open connections, and bad certificate files.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::certs::*;
use common::*;
use rcgen::{CertificateParams, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config(dir: &Path, upstream: SocketAddr, tls_extra: &str) -> String {
    format!(
        "gateway: {{ workers: 1 }}\nlisteners:\n  - name: secure\n    address: 127.0.0.1:0\n    tls:\n      certificates:\n        - {{ cert: '{d}/api.pem', key: '{d}/api.key' }}\n        - {{ cert: '{d}/wild.pem', key: '{d}/wild.key' }}\n{tls_extra}upstreams:\n  - {{ name: echo, targets: [{{ address: '{upstream}' }}] }}\nroutes:\n  - {{ name: r, upstream: echo }}\n",
        d = dir.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_certificate_and_https_is_forwarded() {
    let (dir, ca, api, wild) = server_certs();
    let up = echo_upstream().await;
    let gw = start(&config(dir.path(), up.addr, "      hsts: 365d\n"));
    let a = addr(&gw, "secure");
    let cc = client_config(&ca, &[&rustls::version::TLS13, &rustls::version::TLS12]);

    let mut tls = connect(a, "api.example.test", cc.clone())
        .await
        .expect("handshake");
    assert_eq!(tls.get_ref().1.peer_certificates().expect("certs")[0], api);
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        None,
        "no ALPN asked, none chosen"
    );
    let resp = get_over(&mut tls, "api.example.test", "/x").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("\"x-forwarded-proto\":\"https\""), "{resp}");
    assert!(
        resp.contains("strict-transport-security: max-age=31536000"),
        "{resp}"
    );

    let tls = connect(a, "shop.wild.test", cc.clone())
        .await
        .expect("wildcard handshake");
    assert_eq!(tls.get_ref().1.peer_certificates().expect("certs")[0], wild);

    // An unknown name gets the default (first) certificate, which does not cover it.
    let err = connect(a, "unknown.test", cc)
        .await
        .expect_err("name mismatch");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );

    // Plain HTTP to a TLS port fails fast instead of hanging.
    let (_, closed) = raw(
        a,
        b"GET / HTTP/1.1\r\nhost: x\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(closed);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_negotiates_h2_by_alpn() {
    let (dir, _, _, _) = server_certs();
    let up = echo_upstream().await;
    let gw = start(&config(dir.path(), up.addr, ""));
    let port = addr(&gw, "secure").port();
    let ca = dir.path().join("ca.pem");
    let run = |version: &str| {
        curl(vec![
            version.into(),
            "--cacert".into(),
            ca.display().to_string(),
            "--resolve".into(),
            format!("api.example.test:{port}:127.0.0.1"),
            "-w".into(),
            "\n%{http_code} %{http_version}".into(),
            format!("https://api.example.test:{port}/curl"),
        ])
    };
    let h2 = run("--http2").await;
    assert!(h2.ends_with("\n200 2"), "{h2}");
    assert!(h2.contains("\"x-forwarded-proto\":\"https\""), "{h2}");
    let h1 = run("--http1.1").await;
    assert!(h1.ends_with("\n200 1.1"), "{h1}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_sni_names_can_be_refused() {
    let (dir, ca, api, _) = server_certs();
    let up = echo_upstream().await;
    let gw = start(&config(dir.path(), up.addr, "      unknown_sni: reject\n"));
    let a = addr(&gw, "secure");
    let cc = client_config(&ca, &[&rustls::version::TLS13]);
    let tls = connect(a, "api.example.test", cc.clone())
        .await
        .expect("a covered name still gets its certificate");
    assert_eq!(tls.get_ref().1.peer_certificates().expect("certs")[0], api);
    let err = connect(a, "unknown.test", cc.clone())
        .await
        .expect_err("refused");
    assert!(
        err.to_string().contains("AccessDenied"),
        "no certificate at all: {err}"
    );
    // Without SNI (a client dialing an IP address) there is no name to cover.
    let mut no_sni = (*cc).clone();
    no_sni.enable_sni = false;
    let err = connect(a, "api.example.test", Arc::new(no_sni))
        .await
        .expect_err("refused without SNI");
    assert!(err.to_string().contains("AccessDenied"), "{err}");
    // The listener keeps serving covered names.
    let mut tls = connect(a, "api.example.test", cc).await.expect("handshake");
    assert!(get_over(&mut tls, "api.example.test", "/x")
        .await
        .starts_with("HTTP/1.1 200"));
    // A typo in the setting is an error with its place.
    let bad = config(dir.path(), up.addr, "      unknown_sni: drop\n");
    let err = portcullis::config::load_str(&bad, "t.yaml", &|_| None).expect_err("invalid");
    let text = err.to_string();
    assert!(
        text.contains("unknown_sni") && text.contains("default") && text.contains("reject"),
        "{text}"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_minimum_version_is_enforced() {
    let (dir, ca, _, _) = server_certs();
    let up = echo_upstream().await;
    let gw = start(&config(dir.path(), up.addr, "      min_version: \"1.3\"\n"));
    let a = addr(&gw, "secure");
    let tls12 = client_config(&ca, &[&rustls::version::TLS12]);
    assert!(
        connect(a, "api.example.test", tls12).await.is_err(),
        "TLS 1.2 refused"
    );
    let tls13 = client_config(&ca, &[&rustls::version::TLS13]);
    let mut tls = connect(a, "api.example.test", tls13)
        .await
        .expect("TLS 1.3");
    assert!(get_over(&mut tls, "api.example.test", "/")
        .await
        .starts_with("HTTP/1.1 200"));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_swap_on_reload_without_dropping_open_connections() {
    let (dir, ca, old, _) = server_certs();
    let up = echo_upstream().await;
    let path = dir.path().join("gw.yaml");
    std::fs::write(&path, config(dir.path(), up.addr, "")).expect("write config");
    let gw = portcullis::Gateway::start(portcullis::ConfigSource::File(path)).expect("starts");
    let a = addr(&gw, "secure");
    let cc = client_config(&ca, &[&rustls::version::TLS13]);
    let mut open = connect(a, "api.example.test", cc.clone())
        .await
        .expect("handshake");
    assert!(get_over(&mut open, "api.example.test", "/")
        .await
        .starts_with("HTTP/1.1 200"));

    let new = leaf(&ca, &["api.example.test"], dir.path(), "api");
    assert_ne!(old, new);
    gw.reload().expect("reloads");
    let fresh = connect(a, "api.example.test", cc).await.expect("handshake");
    assert_eq!(
        fresh.get_ref().1.peer_certificates().expect("certs")[0],
        new,
        "new connections get the new certificate"
    );
    assert!(
        get_over(&mut open, "api.example.test", "/")
            .await
            .starts_with("HTTP/1.1 200"),
        "the open connection still works"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_certificate_settings_are_rejected_with_their_place() {
    let (dir, _ca, _, _) = server_certs();
    let up = echo_upstream().await;
    let d = dir.path();
    std::fs::write(d.join("garbage.pem"), "not a certificate").expect("write");
    let good = config(d, up.addr, "");
    let gw = start(&good);
    for (bad, needle) in [
        (
            good.replace("api.pem", "missing.pem"),
            "listeners[0].tls.certificates[0].cert",
        ),
        (
            good.replace("api.pem", "garbage.pem"),
            "holds no PEM certificate",
        ),
        (
            good.replace("api.key", "wild.key"),
            "the key does not fit the certificate",
        ),
        (
            good.replace("api.key", "garbage.pem"),
            "listeners[0].tls.certificates[0].key",
        ),
        (
            config(d, up.addr, "      min_version: \"1.1\"\n"),
            "use \"1.2\" or \"1.3\"",
        ),
    ] {
        let err = apply(&gw, &bad).expect_err(needle).to_string();
        assert!(err.contains(needle), "{needle}: {err}");
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_listeners_can_redirect_to_https() {
    let yaml = "listeners:\n  - { name: plain, address: 127.0.0.1:0, redirect_to_https: 8443 }\n  - { name: std, address: 127.0.0.1:0, redirect_to_https: 443 }\nroutes:\n  - { name: r, respond: { body: never } }\n";
    let gw = start(yaml);
    let got = get_host(addr(&gw, "plain"), "Shop.Example.com:8080", "/cart?x=1").await;
    assert_eq!(got.status, 308);
    assert_eq!(
        got.headers["location"],
        "https://shop.example.com:8443/cart?x=1"
    );
    let got = get_host(addr(&gw, "std"), "shop.example.com", "/").await;
    assert_eq!(got.headers["location"], "https://shop.example.com/");
    let err = portcullis::config::load_str(
        "listeners:\n  - { name: p, address: 127.0.0.1:0, redirect_to_https: 0 }\n",
        "t",
        &|_| None,
    )
    .expect_err("port 0")
    .to_string();
    assert!(err.contains("listeners[0].redirect_to_https"), "{err}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_mtls_verifies_clients_and_forwards_their_identity() {
    let (dir, ca, _, _) = server_certs();
    let d = dir.path();
    leaf(&ca, &["client.test"], d, "client");
    let up = echo_upstream().await;
    let auth = |required: bool| {
        format!(
            "      client_auth: {{ ca: '{}/ca.pem', required: {required}, forward_header: x-forwarded-client-cert }}\n",
            d.display()
        )
    };
    let gw = start(&config(d, up.addr, &auth(true)));
    let a = addr(&gw, "secure");
    let spoof = "GET / HTTP/1.1\r\nhost: api.example.test\r\nx-forwarded-client-cert: Subject=\"CN=admin\"\r\n\r\n";

    // Required: no certificate, no service (the refusal may surface on first read in TLS 1.3).
    let anonymous = client_config(&ca, &[&rustls::version::TLS13, &rustls::version::TLS12]);
    if let Ok(mut tls) = connect(a, "api.example.test", anonymous.clone()).await {
        let _ = tls.write_all(spoof.as_bytes()).await;
        let mut buf = [0u8; 256];
        let got = tokio::time::timeout(Duration::from_secs(3), tls.read(&mut buf))
            .await
            .expect("answer in time");
        assert!(
            !matches!(got, Ok(n) if n > 0 && buf.starts_with(b"HTTP/1.1 200")),
            "served without a certificate"
        );
    }

    // With a certificate: served, and the upstream sees the verified identity, not the spoof.
    let mut tls = connect(a, "api.example.test", client_with_cert(&ca, d, "client"))
        .await
        .expect("handshake");
    tls.write_all(spoof.as_bytes()).await.expect("write");
    let resp = {
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        while !String::from_utf8_lossy(&out).contains("\"body\"") {
            let n = tls.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        resp.contains("DNS=client.test") && resp.contains("Hash="),
        "{resp}"
    );
    assert!(
        !resp.contains("CN=admin"),
        "the client's own header is replaced: {resp}"
    );

    // Optional: clients without a certificate are served, and a spoofed identity is removed.
    apply(&gw, &config(d, up.addr, &auth(false))).expect("applies");
    let mut tls = connect(a, "api.example.test", anonymous)
        .await
        .expect("handshake");
    let resp = get_over(&mut tls, "api.example.test", "/").await;
    assert!(
        resp.starts_with("HTTP/1.1 200") && !resp.contains("x-forwarded-client-cert"),
        "{resp}"
    );
    let err = apply(
        &gw,
        &config(d, up.addr, "      client_auth: { ca: '/missing.pem' }\n"),
    )
    .expect_err("missing")
    .to_string();
    assert!(err.contains("listeners[0].tls.client_auth.ca"), "{err}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_is_negotiated_by_alpn() {
    let (dir, ca, _, _) = server_certs();
    let up = echo_upstream().await;
    let gw = start(&config(dir.path(), up.addr, ""));
    let a = addr(&gw, "secure");
    let mut cc = (*client_config(&ca, &[&rustls::version::TLS13])).clone();
    cc.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tls = connect(a, "api.example.test", Arc::new(cc))
        .await
        .expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .expect("h2 over TLS");
    tokio::spawn(conn);
    let req = http::Request::get("https://api.example.test/over-h2")
        .body(http_body_util::Full::<bytes::Bytes>::default())
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    assert_eq!(
        (resp.status().as_u16(), resp.version()),
        (200, http::Version::HTTP_2)
    );
    use http_body_util::BodyExt;
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("\"x-forwarded-proto\":\"https\""));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ca_client_certificates_are_refused_and_expired_server_certificates_load_with_a_warning(
) {
    let (dir, ca, _, _) = server_certs();
    let d = dir.path();
    let stranger = crate::ca();
    leaf(&stranger, &["intruder.test"], d, "intruder");
    let up = echo_upstream().await;
    let auth = format!("      client_auth: {{ ca: '{}/ca.pem' }}\n", d.display());
    let gw = start(&config(d, up.addr, &auth));
    let a = addr(&gw, "secure");
    // Server verification uses our CA; the client presents a certificate from another CA.
    let cc = client_with_cert(&ca, d, "intruder");
    if let Ok(mut tls) = connect(a, "api.example.test", cc).await {
        let _ = tls
            .write_all(b"GET / HTTP/1.1\r\nhost: api.example.test\r\n\r\n")
            .await;
        let mut buf = [0u8; 64];
        let got = tokio::time::timeout(Duration::from_secs(3), tls.read(&mut buf))
            .await
            .expect("answer in time");
        assert!(
            !matches!(got, Ok(n) if n > 0 && buf.starts_with(b"HTTP/1.1 200")),
            "a foreign CA's certificate was accepted"
        );
    }
    gw.shutdown().await;

    // An expired server certificate still loads (with a warning), so a rotation in progress does not block a reload.
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec!["old.example.test".to_string()]).expect("params");
    params.not_before = rcgen::date_time_ymd(2001, 1, 1);
    params.not_after = rcgen::date_time_ymd(2002, 1, 1);
    let old = params.signed_by(&key, &ca.cert, &ca.key).expect("cert");
    std::fs::write(d.join("api.pem"), old.pem()).expect("write");
    std::fs::write(d.join("api.key"), key.serialize_pem()).expect("write");
    assert!(portcullis::server::tls::warn_if_expired(
        old.der(),
        Path::new("api.pem")
    ));
    let gw = start(&config(d, up.addr, ""));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_auth_maps_client_certificates_to_consumers() {
    let (dir, ca, _, _) = server_certs();
    let d = dir.path();
    leaf(&ca, &["client.test"], d, "client");
    leaf(&ca, &["stranger.test"], d, "stranger");
    leaf_with_subject(&ca, "partner", d, "partner");
    let pinned = leaf_with_subject(&ca, "pinned", d, "pinned");
    // Fingerprints may be written as `openssl x509 -fingerprint` prints them.
    let fingerprint: Vec<String> = ring::digest::digest(&ring::digest::SHA256, pinned.as_ref())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    let fingerprint = fingerprint.join(":");
    let up = echo_upstream().await;
    let yaml = format!(
        "gateway: {{ workers: 1 }}\nlisteners:\n  - name: secure\n    address: 127.0.0.1:0\n    tls:\n      certificates:\n        - {{ cert: '{d}/api.pem', key: '{d}/api.key' }}\n      client_auth: {{ ca: '{d}/ca.pem', required: false }}\nupstreams:\n  - {{ name: echo, targets: [{{ address: '{up}' }}] }}\nconsumers:\n  - name: mobile\n    groups: [apps]\n    credentials: {{ certificates: ['DNS:client.test'] }}\n  - name: partner\n    credentials: {{ certificates: ['CN=partner, O=Example'] }}\n  - name: pinned\n    credentials: {{ certificates: ['sha256:{fingerprint}'] }}\nroutes:\n  - name: r\n    upstream: echo\n    plugins:\n      - mtls_auth: {{}}\n",
        d = d.display(),
        up = up.addr
    );
    let gw = start(&yaml);
    let a = addr(&gw, "secure");
    let host = "api.example.test";
    let mut tls = connect(a, host, client_with_cert(&ca, d, "client"))
        .await
        .expect("handshake");
    let resp = get_over(&mut tls, host, "/").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("\"x-consumer-name\":\"mobile\""), "{resp}");
    // By subject (written with blanks after the commas), and by fingerprint.
    for (stem, name) in [("partner", "partner"), ("pinned", "pinned")] {
        let mut tls = connect(a, host, client_with_cert(&ca, d, stem))
            .await
            .expect("handshake");
        let resp = get_over(&mut tls, host, "/").await;
        assert!(
            resp.contains(&format!("\"x-consumer-name\":\"{name}\"")),
            "{stem}: {resp}"
        );
    }

    // A verified certificate of no consumer, and no certificate at all: 401.
    let mut tls = connect(a, host, client_with_cert(&ca, d, "stranger"))
        .await
        .expect("handshake");
    let resp = get_over(&mut tls, host, "/").await;
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
    let anonymous = client_config(&ca, &[&rustls::version::TLS13]);
    let mut tls = connect(a, host, anonymous).await.expect("handshake");
    let resp = get_over(&mut tls, host, "/").await;
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
    assert!(resp.contains("www-authenticate: Mutual"), "{resp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_failures_are_counted_and_the_tls_version_is_logged() {
    let (dir, ca, _, _) = server_certs();
    let up = echo_upstream().await;
    let log = dir.path().join("access.log");
    let yaml = format!(
        "{}admin: {{ address: 127.0.0.1:0 }}\nobservability:\n  access_log: {{ output: '{}', fields: [tls_version, status] }}\n",
        config(dir.path(), up.addr, ""),
        log.display()
    );
    let gw = start(&yaml);
    let (a, admin) = (addr(&gw, "secure"), gw.admin_addr().expect("admin"));
    // Plaintext sent to the TLS port: the handshake fails.
    let (_, closed) = raw(
        a,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(closed);
    let tls13 = client_config(&ca, &[&rustls::version::TLS13]);
    let mut tls = connect(a, "api.example.test", tls13)
        .await
        .expect("TLS 1.3");
    assert!(get_over(&mut tls, "api.example.test", "/")
        .await
        .starts_with("HTTP/1.1 200"));
    let key = r#"portcullis_tls_handshake_failures_total{listener="secure"} 1"#;
    let mut metrics = String::new();
    let mut line = String::new();
    for _ in 0..100 {
        metrics = get(admin, "/metrics").await.body;
        line = std::fs::read_to_string(&log).unwrap_or_default();
        if metrics.lines().any(|l| l == key) && !line.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(metrics.lines().any(|l| l == key), "{metrics}");
    assert_eq!(line, "{\"tls_version\":\"TLSv1.3\",\"status\":200}\n");
    gw.shutdown().await;
}

/// The admin listener over TLS with client certificates: a listed subject
/// gets its role, any other verified certificate is refused with 401. Also
/// the top-level `certificates` section, with inline PEM, serving a TLS
/// listener that lists none of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_mtls_maps_certificate_subjects_to_roles_and_shared_certificates_serve() {
    let (dir, ca, _, _) = server_certs();
    let d = dir.path();
    leaf(&ca, &["localhost"], d, "admin");
    leaf_with_subject(&ca, "ops", d, "ops");
    leaf_with_subject(&ca, "intruder", d, "intruder");
    let inline_cert = std::fs::read_to_string(d.join("api.pem")).expect("pem");
    let inline_key = std::fs::read_to_string(d.join("api.key")).expect("key");
    let yaml = format!(
        "gateway: {{ workers: 1 }}\nlisteners:\n  - name: secure\n    address: 127.0.0.1:0\n    tls: {{ certificates: [] }}\ncertificates:\n  - name: api\n    cert: {cert}\n    key: {key}\nadmin:\n  address: 127.0.0.1:0\n  tls:\n    certificates: [{{ cert: '{d}/admin.pem', key: '{d}/admin.key' }}]\n    client_auth: {{ ca: '{d}/ca.pem', required: true }}\n  clients:\n    - {{ subject: 'CN=ops, O=Example', role: read_only }}\nroutes:\n  - {{ name: r, respond: {{ status: 200, body: shared }} }}\n",
        cert = serde_json::to_string(&inline_cert).expect("json"),
        key = serde_json::to_string(&inline_key).expect("json"),
        d = d.display()
    );
    let gw = start(&yaml);
    let mut tls = connect(
        addr(&gw, "secure"),
        "api.example.test",
        client_config(&ca, &[&rustls::version::TLS13]),
    )
    .await
    .expect("the shared certificate serves");
    assert!(get_over(&mut tls, "api.example.test", "/")
        .await
        .ends_with("shared"));

    let admin = gw.admin_addr().expect("admin");
    let mut ops = connect(admin, "localhost", client_with_cert(&ca, d, "ops"))
        .await
        .expect("handshake");
    let status = get_over(&mut ops, "localhost", "/api/status").await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(
        status.contains("\"name\":\"CN=ops,O=Example\"") && status.contains("read_only"),
        "{status}"
    );
    let write = {
        ops.write_all(
            b"DELETE /api/routes/r HTTP/1.1\r\nhost: localhost\r\ncontent-length: 0\r\n\r\n",
        )
        .await
        .expect("write");
        let mut buf = [0u8; 1024];
        let n = ops.read(&mut buf).await.expect("read");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert!(write.starts_with("HTTP/1.1 403"), "{write}");
    let mut other = connect(admin, "localhost", client_with_cert(&ca, d, "intruder"))
        .await
        .expect("handshake");
    let denied = get_over(&mut other, "localhost", "/api/status").await;
    assert!(denied.starts_with("HTTP/1.1 401"), "{denied}");
}
