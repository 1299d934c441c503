//! Cluster mode end to end: a real etcd and several gateway nodes in one
//! process. A route created through one node's Admin API serves on the
//! other within a second; secrets are encrypted in etcd; concurrent writes
//! through two nodes cannot overwrite each other; losing etcd leaves every
//! node serving, and it resynchronises when etcd returns; start-up with
//! etcd down uses the cached copy or fails clearly; a document from a newer
//! version is refused; nodes reach etcd over TLS with client certificates,
//! and authenticate with a user and password (again when a token expires).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::etcd::Etcd;
use common::*;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use portcullis::config::store::etcd_client::EtcdClient;
use portcullis::{ConfigSource, Gateway};
use serde_json::{json, Value};

const TOKEN: &str = "cluster-admin-token";
const KEY: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

fn node_file(dir: &Path, name: &str, etcd: &str, shared: &str) -> PathBuf {
    let d = ring::digest::digest(&ring::digest::SHA256, TOKEN.as_bytes());
    let sha: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let path = dir.join(format!("{name}.yaml"));
    let text = format!(
        "{}admin:\n  address: 127.0.0.1:0\n  tokens: [{{ name: {name}-ops, role: read_write, sha256: {sha} }}]\ncluster:\n  etcd: {{ endpoints: [\"{etcd}\"], timeout: 1s }}\n  encryption_key: {KEY}\n{shared}",
        listeners(1)
    );
    std::fs::write(&path, text).expect("node file");
    path
}

fn start(path: &Path) -> Gateway {
    Gateway::start(ConfigSource::File(path.to_path_buf())).expect("node starts")
}

async fn api(
    gw: &Gateway,
    method: Method,
    path: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> Got {
    let admin = gw.admin_addr().expect("admin");
    let mut b = Request::builder()
        .method(method)
        .uri(format!("http://{admin}{path}"))
        .header("authorization", format!("Bearer {TOKEN}"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let body = body.map(|v| Bytes::from(v.to_string())).unwrap_or_default();
    send(b.body(Full::new(body)).expect("request")).await
}

/// Polls `path` on `gw`'s public listener until it answers `body`; returns how long it took.
async fn served_within(gw: &Gateway, path: &str, body: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let got = get(addr(gw, "main"), path).await;
        if got.status == StatusCode::OK && got.body == body {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{path} not served within {limit:?}: {} {}",
            got.status,
            got.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn route(name: &str, body: &str) -> Value {
    json!({"name": name, "match": {"paths": [format!("/{name}")]}, "respond": {"status": 200, "body": body}})
}

const SEED: &str = "routes:\n  - name: seeded\n    match: { paths: [/seeded] }\n    respond: { status: 200, body: seed }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_one_configuration_through_etcd() {
    let mut etcd = Etcd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    // The first node seeds etcd from its file; the second's routes are ignored.
    let a = start(&node_file(dir.path(), "a", &etcd.url(), SEED));
    let b = start(&node_file(dir.path(), "b", &etcd.url(), "routes:\n  - name: ignored\n    match: { paths: [/ignored] }\n    respond: { status: 200 }\n"));
    served_within(&b, "/seeded", "seed", Duration::from_secs(1)).await;
    assert_eq!(
        get(addr(&b, "main"), "/ignored").await.status,
        StatusCode::NOT_FOUND
    );

    // A route created through A serves on B within a second.
    let created = api(
        &a,
        Method::POST,
        "/api/routes",
        Some(route("fresh", "new")),
        &[],
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let took = served_within(&b, "/fresh", "new", Duration::from_secs(1)).await;
    eprintln!("route visible on node B after {took:?}");
    assert_eq!(
        api(&b, Method::GET, "/api/status", None, &[]).await.json()["store"],
        "etcd"
    );

    // Secrets are encrypted in etcd and readable by every node.
    let consumer = json!({"name": "app", "credentials": {"api_keys": ["plaintext-key-987"]}});
    assert_eq!(
        api(&a, Method::POST, "/api/consumers", Some(consumer), &[])
            .await
            .status,
        StatusCode::CREATED
    );
    let client =
        EtcdClient::new(&[etcd.url()], Duration::from_secs(2), None, None).expect("client");
    let stored = client
        .get(b"/portcullis/config")
        .await
        .expect("get")
        .expect("stored");
    let text = String::from_utf8_lossy(&stored.value);
    assert!(
        !text.contains("plaintext-key-987") && text.contains("enc:v1:"),
        "{text}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let on_b = api(&b, Method::GET, "/api/consumers/app/credentials", None, &[])
        .await
        .json();
    assert_eq!(on_b["api_keys"][0], "plaintext-key-987");

    // Node-local sections cannot be changed through the API in cluster mode.
    let local = api(
        &a,
        Method::POST,
        "/api/listeners",
        Some(json!({"name": "x", "address": "127.0.0.1:0"})),
        &[],
    )
    .await;
    assert_eq!(local.status, StatusCode::CONFLICT);
    assert_eq!(local.code(), "node_local");

    // Two operators with the same ETag on two nodes: the second write is refused.
    let tag = api(&a, Method::GET, "/api/routes/fresh", None, &[])
        .await
        .headers["etag"]
        .to_str()
        .expect("etag")
        .to_string();
    let first = api(
        &b,
        Method::PATCH,
        "/api/routes/fresh",
        Some(json!({"respond": {"status": 200, "body": "by-b"}})),
        &[("if-match", &tag)],
    )
    .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let second = api(
        &a,
        Method::PATCH,
        "/api/routes/fresh",
        Some(json!({"respond": {"status": 200, "body": "by-a"}})),
        &[("if-match", &tag)],
    )
    .await;
    assert_eq!(
        second.status,
        StatusCode::PRECONDITION_FAILED,
        "{}",
        second.body
    );
    served_within(&a, "/fresh", "by-b", Duration::from_secs(1)).await;

    // etcd stops: both nodes keep serving; writes fail cleanly.
    etcd.stop();
    for gw in [&a, &b] {
        assert_eq!(get(addr(gw, "main"), "/fresh").await.body, "by-b");
    }
    let refused = api(
        &a,
        Method::POST,
        "/api/routes",
        Some(route("offline", "x")),
        &[],
    )
    .await;
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        refused.body
    );
    assert_eq!(
        get(addr(&a, "main"), "/offline").await.status,
        StatusCode::NOT_FOUND
    );

    // etcd returns: a write through A reaches B again.
    etcd.restart();
    let start = Instant::now();
    loop {
        let r = api(
            &a,
            Method::POST,
            "/api/routes",
            Some(route("after", "back")),
            &[],
        )
        .await;
        if r.status == StatusCode::CREATED {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{} {}",
            r.status,
            r.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    served_within(&b, "/after", "back", Duration::from_secs(3)).await;

    // Someone deletes the key by hand: the nodes store their copy again,
    // and writes work again (no endless compare-and-swap conflict).
    etcd.delete("/portcullis/config");
    let start = Instant::now();
    loop {
        let r = api(
            &b,
            Method::POST,
            "/api/routes",
            Some(route("again", "ok")),
            &[],
        )
        .await;
        if r.status == StatusCode::CREATED {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{} {}",
            r.status,
            r.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    served_within(&a, "/again", "ok", Duration::from_secs(2)).await;
    served_within(&a, "/after", "back", Duration::from_secs(1)).await;
    let stored = client
        .get(b"/portcullis/config")
        .await
        .expect("get")
        .expect("stored again");
    assert!(String::from_utf8_lossy(&stored.value).contains("\"after\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_uses_the_cache_fails_clearly_and_refuses_newer_formats() {
    let mut etcd = Etcd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = node_file(dir.path(), "c", &etcd.url(), SEED);
    let gw = start(&file);
    served_within(&gw, "/seeded", "seed", Duration::from_secs(1)).await;
    drop(gw);

    // etcd down: the node starts from its cached copy.
    etcd.stop();
    let gw = start(&file);
    served_within(&gw, "/seeded", "seed", Duration::from_secs(1)).await;
    drop(gw);
    // A node without a cache cannot start, and says why.
    let fresh = node_file(dir.path(), "d", &etcd.url(), "");
    let err = Gateway::start(ConfigSource::File(fresh))
        .err()
        .expect("no etcd, no cache");
    assert!(err.to_string().contains("no cached copy"), "{err}");

    // A document written by a newer version is refused at start.
    etcd.restart();
    let client =
        EtcdClient::new(&[etcd.url()], Duration::from_secs(2), None, None).expect("client");
    let current = client
        .get(b"/portcullis/config")
        .await
        .expect("get")
        .expect("stored");
    let newer = json!({"format": 2, "written_by": "portcullis 9.0.0", "document": {}}).to_string();
    client
        .put_if(
            b"/portcullis/config",
            newer.as_bytes(),
            current.mod_revision,
        )
        .await
        .expect("put");
    let other = node_file(dir.path(), "e", &etcd.url(), "");
    let err = Gateway::start(ConfigSource::File(other))
        .err()
        .expect("newer format");
    assert!(err.to_string().contains("portcullis 9.0.0"), "{err}");
}

/// `node_file` with `tls` (a flow mapping's fields) added to `cluster.etcd`.
fn tls_node_file(dir: &Path, name: &str, etcd: &str, shared: &str, tls: &str) -> PathBuf {
    etcd_fields_node_file(dir, name, etcd, shared, &format!("tls: {{ {tls} }}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_reach_etcd_over_tls_with_a_client_certificate() {
    let certs = tempfile::tempdir().expect("tempdir");
    let c = certs.path();
    let ca = common::certs::ca();
    std::fs::write(c.join("ca.pem"), ca.cert.pem()).expect("write ca");
    common::certs::leaf(&ca, &["127.0.0.1", "localhost"], c, "etcd");
    common::certs::leaf_with_subject(&ca, "gateway", c, "client");
    let etcd = Etcd::start_tls(c);
    let dir = tempfile::tempdir().expect("tempdir");
    let d = c.display();
    let tls = format!(
        "ca: '{d}/ca.pem', client_certificate: {{ cert: '{d}/client.pem', key: '{d}/client.key' }}"
    );

    // Reads, compare-and-swap writes and the watch all go over TLS.
    let a = start(&tls_node_file(dir.path(), "a", &etcd.url(), SEED, &tls));
    let b = start(&tls_node_file(dir.path(), "b", &etcd.url(), "", &tls));
    served_within(&b, "/seeded", "seed", Duration::from_secs(1)).await;
    let created = api(
        &a,
        Method::POST,
        "/api/routes",
        Some(route("secure", "over tls")),
        &[],
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    served_within(&b, "/secure", "over tls", Duration::from_secs(1)).await;

    // Nodes that cannot reach it refuse to start (they have no cached
    // copy), and say why.
    let refused = |name: &str, tls: Option<&str>| {
        let file = match tls {
            Some(t) => tls_node_file(dir.path(), name, &etcd.url(), "", t),
            None => node_file(dir.path(), name, &etcd.url(), ""),
        };
        Gateway::start(ConfigSource::File(file))
            .err()
            .expect("cannot reach etcd")
            .to_string()
    };
    // Without a `tls` section, etcd's certificate is checked against the
    // system's roots, which do not know the test CA.
    let err = refused("no-tls", None);
    assert!(
        err.contains("TLS handshake failed") && err.contains("UnknownIssuer"),
        "{err}"
    );
    // Without the client certificate etcd requires.
    let err = refused("no-client-cert", Some(&format!("ca: '{d}/ca.pem'")));
    assert!(err.contains("client_certificate"), "{err}");
    // Another CA.
    let other = common::certs::ca();
    std::fs::write(c.join("other-ca.pem"), other.cert.pem()).expect("write ca");
    let err = refused("wrong-ca", Some(&tls.replace("/ca.pem", "/other-ca.pem")));
    assert!(
        err.contains("invalid peer certificate") && err.contains("cluster.etcd.tls"),
        "{err}"
    );
    // A CA file that is missing.
    let err = refused("missing-ca", Some("ca: /nonexistent/ca.pem"));
    assert!(err.contains("cluster.etcd.tls.ca"), "{err}");
    // TLS settings with cleartext endpoints.
    let plain = tls_node_file(dir.path(), "plain", "http://127.0.0.1:1", "", &tls);
    let err = Gateway::start(ConfigSource::File(plain))
        .err()
        .expect("tls without https")
        .to_string();
    assert!(
        err.contains("cluster.etcd.tls") && err.contains("https://"),
        "{err}"
    );
}

/// `node_file` with `fields` (a flow mapping's fields) added to `cluster.etcd`.
fn etcd_fields_node_file(
    dir: &Path,
    name: &str,
    etcd: &str,
    shared: &str,
    fields: &str,
) -> PathBuf {
    let path = node_file(dir, name, etcd, shared);
    let text = std::fs::read_to_string(&path).expect("node file");
    let text = text.replace("timeout: 1s }", &format!("timeout: 1s, {fields} }}"));
    std::fs::write(&path, text).expect("node file");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_authenticate_to_etcd_with_a_user_and_password() {
    // Tokens last one second unused, so the test sees one expire.
    let etcd = Etcd::start_with(&["--auth-token-ttl", "1"]);
    etcd.enable_auth("r00t-pw");
    let dir = tempfile::tempdir().expect("tempdir");
    let creds = "username: root, password: r00t-pw";
    let a = start(&etcd_fields_node_file(
        dir.path(),
        "a",
        &etcd.url(),
        SEED,
        creds,
    ));
    let b = start(&etcd_fields_node_file(
        dir.path(),
        "b",
        &etcd.url(),
        "",
        creds,
    ));
    served_within(&b, "/seeded", "seed", Duration::from_secs(1)).await;
    for (name, wait) in [("first", false), ("after-expiry", true)] {
        if wait {
            // The token A holds is forgotten by etcd: its next write
            // authenticates again.
            tokio::time::sleep(Duration::from_millis(2500)).await;
        }
        let created = api(
            &a,
            Method::POST,
            "/api/routes",
            Some(route(name, name)),
            &[],
        )
        .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
        served_within(&b, &format!("/{name}"), name, Duration::from_secs(1)).await;
    }

    let refused = |name: &str, fields: &str| {
        let file = etcd_fields_node_file(dir.path(), name, &etcd.url(), "", fields);
        Gateway::start(ConfigSource::File(file))
            .err()
            .expect("refused by etcd")
            .to_string()
    };
    let err = refused("wrong-password", "username: root, password: nope");
    assert!(
        err.contains("authentication failed") && err.contains("cluster.etcd.username"),
        "{err}"
    );
    let err = refused("no-credentials", "prefix: /portcullis");
    assert!(err.contains("etcd has authentication on"), "{err}");
    let err = refused("no-permission", "username: nobody, password: nobody");
    assert!(err.contains("permission"), "{err}");
    let err = refused("half", "username: root");
    assert!(err.contains("give both `username` and `password`"), "{err}");
    let err = refused("empty-user", "username: '', password: x");
    assert!(err.contains("cluster.etcd.username"), "{err}");
    assert!(
        err.contains("the user name is empty; give the etcd user"),
        "{err}"
    );
    // Credentials for an etcd without authentication.
    let open = Etcd::start();
    let file = etcd_fields_node_file(dir.path(), "auth-off", &open.url(), "", creds);
    let err = Gateway::start(ConfigSource::File(file))
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("etcd has authentication off"), "{err}");
}
