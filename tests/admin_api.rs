//! The Admin API end to end on a real gateway whose store is its YAML file:
//! credentials and roles, every resource verb, validation errors with field
//! paths, optimistic concurrency, references, limits, the audit log, the
//! file written back (and a restart that comes back with it), the runtime
//! views, and the OpenAPI document checked against the live API.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use portcullis::{ConfigSource, Gateway};
use serde_json::{json, Value};

const RW: &str = "rw-token-123";
const RO: &str = "ro-token-456";

fn sha(t: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, t.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn config(upstream: SocketAddr, audit: &Path) -> String {
    format!(
        "{}admin:\n  address: 127.0.0.1:0\n  max_body_size: 64kb\n  audit_log: {}\n  tokens:\n    - {{ name: ci, role: read_write, sha256: {} }}\n    - {{ name: viewer, role: read_only, sha256: {} }}\nupstreams:\n  - name: echo\n    targets: [{{ address: {upstream} }}]\n  - name: spare\n    targets: [{{ address: {upstream} }}]\nroutes:\n  - name: api\n    match: {{ paths: [/api] }}\n    upstream: echo\n",
        listeners(1),
        audit.display(),
        sha(RW),
        sha(RO)
    )
}

async fn call(
    admin: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> Got {
    let mut b = Request::builder()
        .method(method)
        .uri(format!("http://{admin}{path}"));
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let body = body.map(|v| Bytes::from(v.to_string())).unwrap_or_default();
    send(b.body(Full::new(body)).expect("request")).await
}

fn start_file(path: &Path) -> Gateway {
    Gateway::start(ConfigSource::File(path.to_path_buf())).expect("gateway starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_and_roles_are_enforced() {
    let up = echo_upstream().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("gw.yaml");
    std::fs::write(&file, config(up.addr, &dir.path().join("audit.log"))).expect("write");
    let gw = start_file(&file);
    let admin = gw.admin_addr().expect("admin");
    let public = addr(&gw, "main");
    let none = call(admin, Method::GET, "/api/routes", None, None, &[]).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert!(none.headers.contains_key("www-authenticate"));
    let wrong = call(admin, Method::GET, "/api/routes", Some("guess"), None, &[]).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let ro = call(admin, Method::GET, "/api/routes", Some(RO), None, &[]).await;
    assert_eq!(ro.status, StatusCode::OK);
    let denied = call(
        admin,
        Method::DELETE,
        "/api/routes/api",
        Some(RO),
        None,
        &[],
    )
    .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN, "{}", denied.body);
    // The public listener has no admin API at all.
    // (`/api` there is a route to the echo upstream, which answers instead.)
    let outside = get_with(
        public,
        "/api/status",
        &[("authorization", &format!("Bearer {RW}"))],
    )
    .await;
    assert!(!outside.body.contains("\"store\""), "{}", outside.body);
    let unrouted = get_with(
        public,
        "/openapi.json",
        &[("authorization", &format!("Bearer {RW}"))],
    )
    .await;
    assert_eq!(unrouted.status, StatusCode::NOT_FOUND);
    // Health and metrics stay open for probes.
    assert_eq!(get(admin, "/healthz").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_created_through_the_api_is_served_saved_and_survives_a_restart() {
    let up = echo_upstream().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("gw.yaml");
    let audit = dir.path().join("audit.log");
    std::fs::write(&file, config(up.addr, &audit)).expect("write");
    let gw = start_file(&file);
    let admin = gw.admin_addr().expect("admin");
    let public = addr(&gw, "main");
    let route = json!({"name": "hello", "match": {"paths": ["/hello"]}, "respond": {"status": 200, "body": "hi"}});
    let created = call(
        admin,
        Method::POST,
        "/api/routes",
        Some(RW),
        Some(route.clone()),
        &[],
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.headers["location"], "/api/routes/hello");
    assert!(created.headers.contains_key("etag"));
    assert_eq!(created.headers["x-config-revision"], "2");
    let served = get(public, "/hello").await;
    assert_eq!(
        (served.status, served.body.as_str()),
        (StatusCode::OK, "hi")
    );
    // Saved to the file, which loads back to the same document.
    let saved = portcullis::config::load_file(&file).expect("the written file is valid");
    assert!(saved.raw["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .any(|r| r == &route));
    // The file watcher does not re-apply the gateway's own write.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(gw.snapshot().revision, 2);
    // Creating it twice conflicts.
    let again = call(
        admin,
        Method::POST,
        "/api/routes",
        Some(RW),
        Some(route),
        &[],
    )
    .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    // Audited: who, what, revision.
    let lines: Vec<Value> = std::fs::read_to_string(&audit)
        .expect("audit log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines[0]["who"], "ci");
    assert_eq!(lines[0]["method"], "POST");
    assert_eq!(lines[0]["path"], "/api/routes");
    assert_eq!(lines[0]["revision"], 2);
    assert_eq!(lines[0]["outcome"], "applied");
    assert_eq!(lines[0]["status"], Value::Null);
    assert_eq!(lines[1]["outcome"], "refused");
    assert_eq!(lines[1]["status"], 409);
    drop(gw);
    // A restart comes back with the route.
    let gw = start_file(&file);
    let served = get(addr(&gw, "main"), "/hello").await;
    assert_eq!(served.body, "hi");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_verb_with_etags_references_and_bad_input() {
    let up = echo_upstream().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("gw.yaml");
    std::fs::write(&file, config(up.addr, &dir.path().join("audit.log"))).expect("write");
    let gw = start_file(&file);
    let admin = gw.admin_addr().expect("admin");
    let public = addr(&gw, "main");
    let t = Some(RW);

    // Get with an ETag; a stale If-Match is refused with 412.
    let one = call(admin, Method::GET, "/api/upstreams/echo", t, None, &[]).await;
    assert_eq!(one.status, StatusCode::OK);
    let tag = one.headers["etag"].to_str().expect("etag").to_string();
    let patched = call(
        admin,
        Method::PATCH,
        "/api/upstreams/echo",
        t,
        Some(json!({"max_in_flight": 50})),
        &[("if-match", &tag)],
    )
    .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    assert_eq!(patched.json()["max_in_flight"], 50);
    let stale = call(
        admin,
        Method::PATCH,
        "/api/upstreams/echo",
        t,
        Some(json!({"max_in_flight": 60})),
        &[("if-match", &tag)],
    )
    .await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    // Replace with PUT; the body's name must match the URL's.
    let put = call(
        admin,
        Method::PUT,
        "/api/routes/api",
        t,
        Some(json!({"match": {"paths": ["/v2"]}, "upstream": "echo"})),
        &[],
    )
    .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    assert_eq!(get(public, "/v2/x").await.status, StatusCode::OK);
    let renamed = call(
        admin,
        Method::PUT,
        "/api/routes/api",
        t,
        Some(json!({"name": "other", "match": {"paths": ["/v2"]}, "upstream": "echo"})),
        &[],
    )
    .await;
    assert_eq!(renamed.status, StatusCode::BAD_REQUEST);
    // Create-only PUT.
    let create_only = call(
        admin,
        Method::PUT,
        "/api/routes/api",
        t,
        Some(json!({"match": {"paths": ["/v3"]}, "upstream": "echo"})),
        &[("if-none-match", "*")],
    )
    .await;
    assert_eq!(create_only.status, StatusCode::PRECONDITION_FAILED);

    // Validation errors carry the document path and the resource field.
    let bad = call(
        admin,
        Method::POST,
        "/api/routes",
        t,
        Some(json!({"name": "bad", "match": {"paths": ["nope"]}, "upstream": "echo"})),
        &[],
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.code(), "invalid_config");
    assert_eq!(bad.json()["error"]["errors"][0]["field"], "match.paths[0]");
    let unknown = call(
        admin,
        Method::POST,
        "/api/routes",
        t,
        Some(json!({"name": "u", "match": {"paths": ["/u"]}, "upstream": "echo", "colour": "red"})),
        &[],
    )
    .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert!(unknown.body.contains("colour"), "{}", unknown.body);
    let missing_ref = call(
        admin,
        Method::POST,
        "/api/routes",
        t,
        Some(json!({"name": "m", "match": {"paths": ["/m"]}, "upstream": "ghost"})),
        &[],
    )
    .await;
    assert_eq!(missing_ref.status, StatusCode::BAD_REQUEST);
    assert!(missing_ref.body.contains("ghost"), "{}", missing_ref.body);
    let malformed = send(
        Request::post(format!("http://{admin}/api/routes"))
            .header("authorization", format!("Bearer {RW}"))
            .body(Full::new(Bytes::from_static(b"{\"name\": ")))
            .expect("req"),
    )
    .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert_eq!(malformed.code(), "malformed_json");
    let huge = json!({"name": "big", "match": {"paths": ["/big"]}, "respond": {"status": 200, "body": "x".repeat(100_000)}});
    let too_big = call(admin, Method::POST, "/api/routes", t, Some(huge), &[]).await;
    assert_eq!(too_big.status, StatusCode::PAYLOAD_TOO_LARGE);
    let no_kind = call(admin, Method::GET, "/api/widgets", t, None, &[]).await;
    assert_eq!(no_kind.status, StatusCode::NOT_FOUND);
    let bad_page = call(admin, Method::GET, "/api/routes?limit=0", t, None, &[]).await;
    assert_eq!(bad_page.status, StatusCode::BAD_REQUEST);
    // Nothing of the rejected writes was applied.
    assert!(gw
        .snapshot()
        .routes
        .iter()
        .all(|r| !["bad", "u", "m", "big"].contains(&&*r.name)));

    // Deleting an upstream still in use: 409 naming the routes.
    let in_use = call(admin, Method::DELETE, "/api/upstreams/echo", t, None, &[]).await;
    assert_eq!(in_use.status, StatusCode::CONFLICT);
    assert_eq!(in_use.json()["error"]["details"]["routes"], json!(["api"]));
    let gone = call(admin, Method::DELETE, "/api/upstreams/spare", t, None, &[]).await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT);
    assert_eq!(
        call(admin, Method::GET, "/api/upstreams/spare", t, None, &[])
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // Pagination.
    for i in 0..3 {
        let r = json!({"name": format!("r{i}"), "match": {"paths": [format!("/r{i}")]}, "respond": {"status": 204}});
        assert_eq!(
            call(admin, Method::POST, "/api/routes", t, Some(r), &[])
                .await
                .status,
            StatusCode::CREATED
        );
    }
    let page = call(
        admin,
        Method::GET,
        "/api/routes?offset=1&limit=2",
        t,
        None,
        &[],
    )
    .await
    .json();
    assert_eq!(page["total"], 4);
    assert_eq!(page["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(page["data"][0]["name"], "r0");
    assert_eq!(page["next"], "/api/routes?offset=3&limit=2");

    // Targets and credentials as sub-resources.
    let add = call(
        admin,
        Method::POST,
        "/api/upstreams/echo/targets",
        t,
        Some(json!({"address": "127.0.0.1:9", "weight": 0})),
        &[],
    )
    .await;
    assert_eq!(add.status, StatusCode::CREATED, "{}", add.body);
    let targets = call(
        admin,
        Method::GET,
        "/api/upstreams/echo/targets",
        t,
        None,
        &[],
    )
    .await
    .json();
    assert_eq!(targets["data"].as_array().map(Vec::len), Some(2));
    let del = call(
        admin,
        Method::DELETE,
        "/api/upstreams/echo/targets/127.0.0.1:9",
        t,
        None,
        &[],
    )
    .await;
    assert_eq!(del.status, StatusCode::NO_CONTENT);
    let consumer = json!({"name": "app", "credentials": {"api_keys": ["first-key-123"]}});
    assert_eq!(
        call(
            admin,
            Method::POST,
            "/api/consumers",
            t,
            Some(consumer),
            &[]
        )
        .await
        .status,
        StatusCode::CREATED
    );
    let creds = call(
        admin,
        Method::PATCH,
        "/api/consumers/app/credentials",
        t,
        Some(json!({"api_keys": ["second-key-456"]})),
        &[],
    )
    .await;
    assert_eq!(creds.status, StatusCode::OK, "{}", creds.body);
    assert_eq!(creds.json()["api_keys"], json!(["second-key-456"]));
    // Global plugins are named by their plugin.
    let plugin = call(
        admin,
        Method::PUT,
        "/api/plugins/cors",
        t,
        Some(json!({"origins": ["https://app.example"]})),
        &[],
    )
    .await;
    assert_eq!(plugin.status, StatusCode::CREATED, "{}", plugin.body);
    assert_eq!(
        call(admin, Method::GET, "/api/plugins/cors", t, None, &[])
            .await
            .json()["cors"]["origins"][0],
        "https://app.example"
    );

    // The whole document, with an ETag for whole-document writes.
    let whole = call(admin, Method::GET, "/api/config", t, None, &[]).await;
    let doc_tag = whole.headers["etag"].to_str().expect("etag").to_string();
    let yaml = call(admin, Method::GET, "/api/config?format=yaml", t, None, &[]).await;
    assert!(yaml.body.contains("name: echo"), "{}", yaml.body);
    let mut doc = whole.json();
    doc["routes"]
        .as_array_mut()
        .expect("routes")
        .retain(|r| r["name"] == "api");
    let replaced = call(
        admin,
        Method::PUT,
        "/api/config",
        t,
        Some(doc.clone()),
        &[("if-match", &doc_tag)],
    )
    .await;
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.body);
    assert_eq!(gw.snapshot().routes.len(), 1);
    let conflict = call(
        admin,
        Method::PUT,
        "/api/config",
        t,
        Some(doc),
        &[("if-match", &doc_tag)],
    )
    .await;
    assert_eq!(conflict.status, StatusCode::PRECONDITION_FAILED);

    // Runtime views.
    let status = call(admin, Method::GET, "/api/status", Some(RO), None, &[])
        .await
        .json();
    assert_eq!(status["store"], "file");
    assert_eq!(status["revision"], gw.snapshot().revision);
    let health = call(
        admin,
        Method::GET,
        "/api/upstreams/echo/health",
        Some(RO),
        None,
        &[],
    )
    .await
    .json();
    assert_eq!(health["targets"][0]["healthy"], true);
    assert_eq!(health["available"], 1);
}

/// Every path and method in the OpenAPI document exists on the live API
/// (answers something other than 404/405 for existing resources), and every
/// documented path is an API path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_matches_the_api() {
    let up = echo_upstream().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("gw.yaml");
    std::fs::write(&file, config(up.addr, &dir.path().join("audit.log"))).expect("write");
    let gw = start_file(&file);
    let admin = gw.admin_addr().expect("admin");
    let spec = get(admin, "/api/openapi.json").await.json();
    assert_eq!(
        spec["openapi"].as_str().map(|v| v.starts_with("3.")),
        Some(true)
    );
    let paths = spec["paths"].as_object().expect("paths");
    assert!(paths.len() >= 10, "{}", paths.len());
    for (path, ops) in paths {
        let concrete = path
            .replace("{kind}", "routes")
            .replace("{id}", "api")
            .replace(
                "{name}",
                if path.starts_with("/consumers") {
                    "nobody"
                } else {
                    "echo"
                },
            )
            .replace("{address}", "127.0.0.1:1");
        for (method, op) in ops.as_object().expect("operations") {
            let m: Method = method.to_uppercase().parse().expect("method");
            // Reads are called for real; writes are called with a read-only
            // token, which a real route answers with 403 before doing anything.
            let token = if m == Method::GET { RW } else { RO };
            let got = call(
                admin,
                m.clone(),
                &format!("/api{concrete}"),
                Some(token),
                Some(json!({})),
                &[],
            )
            .await;
            assert!(
                got.status != StatusCode::METHOD_NOT_ALLOWED
                    && !(got.status == StatusCode::NOT_FOUND
                        && got.code() == "not_found"
                        && got.body.contains("admin endpoints")),
                "{method} {path}: {} {}",
                got.status,
                got.body
            );
            let documented: Vec<String> = op["responses"]
                .as_object()
                .expect("responses")
                .keys()
                .cloned()
                .collect();
            assert!(
                documented.contains(&got.status.as_u16().to_string()),
                "{method} {path} answered {} which is not documented ({documented:?})",
                got.status
            );
        }
    }
    // An undocumented path is not served.
    let other = call(
        admin,
        Method::GET,
        "/api/routes/api/extra",
        Some(RW),
        None,
        &[],
    )
    .await;
    assert!(
        other.status == StatusCode::NOT_FOUND || other.status == StatusCode::METHOD_NOT_ALLOWED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_file_changes_live_in_memory() {
    let yaml = format!(
        "{}admin:\n  address: 127.0.0.1:0\n  tokens: [{{ name: ci, role: read_write, sha256: {} }}]\n",
        listeners(1),
        sha(RW)
    );
    let gw = start(&yaml);
    let admin = gw.admin_addr().expect("admin");
    let r = json!({"name": "mem", "match": {"paths": ["/mem"]}, "respond": {"status": 200, "body": "m"}});
    let created = call(admin, Method::POST, "/api/routes", Some(RW), Some(r), &[]).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(get(addr(&gw, "main"), "/mem").await.body, "m");
    assert_eq!(
        call(admin, Method::GET, "/api/status", Some(RW), None, &[])
            .await
            .json()["store"],
        "memory"
    );
    // A reload keeps the API's document.
    gw.reload().expect("reload");
    assert_eq!(get(addr(&gw, "main"), "/mem").await.body, "m");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_configured_credentials_means_no_api() {
    let gw = start(&format!(
        "{}admin: {{ address: 127.0.0.1:0 }}\n",
        listeners(1)
    ));
    let admin = gw.admin_addr().expect("admin");
    let got = call(
        admin,
        Method::GET,
        "/api/routes",
        Some("anything"),
        None,
        &[],
    )
    .await;
    assert_eq!(got.status, StatusCode::UNAUTHORIZED);
    assert!(got.body.contains("admin.tokens"), "{}", got.body);
}
