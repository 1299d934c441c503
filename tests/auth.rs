//! The plugin chain end to end: API keys, basic auth, ACLs, address rules,
//! anonymous access, consumer-scoped plugins, identity headers and body
//! limits, through the real gateway to a real upstream.

mod common;

use std::net::SocketAddr;

use base64::Engine as _;
use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::Full;
use portcullis::{ConfigSource, Gateway};

const ALICE_KEY: &str = "alice-key-0123456789";
const BOB_KEY: &str = "bob-key-0123456789";

fn config(up: SocketAddr, bcrypt_hash: &str) -> String {
    // Bob's key is given as its SHA-256, the way a config can avoid holding keys.
    let bob_digest: String = ring_sha256_hex(BOB_KEY);
    format!(
        r#"{listeners}upstreams:
  - name: echo
    targets: [{{ address: '{up}' }}]
consumers:
  - name: alice
    groups: [gold, staff]
    credentials:
      api_keys: ['{ALICE_KEY}']
      basic: [{{ username: alice, password: '{bcrypt_hash}' }}]
  - name: bob
    groups: [free]
    credentials:
      api_keys: ['sha256:{bob_digest}']
    plugins:
      - request_size_limit: {{ max: 10B }}
  - name: guest
    groups: [anonymous]
routes:
  - name: keyed
    match: {{ paths: ['/keyed'] }}
    upstream: echo
    plugins:
      - key_auth: {{ query: api_key }}
  - name: gold
    match: {{ paths: ['/gold'] }}
    upstream: echo
    plugins:
      - key_auth: {{}}
      - acl: {{ allow: [gold] }}
  - name: either
    match: {{ paths: ['/either'] }}
    upstream: echo
    plugins:
      - basic_auth: {{ realm: shop }}
      - key_auth: {{ keep_credentials: true }}
  - name: open
    match: {{ paths: ['/open'] }}
    upstream: echo
    plugins:
      - key_auth: {{ anonymous: guest }}
      - acl: {{ deny: [free] }}
  - name: plain
    match: {{ paths: ['/plain'] }}
    upstream: echo
  - name: local
    match: {{ paths: ['/local'] }}
    upstream: echo
    plugins:
      - ip_restriction: {{ allow: ['10.0.0.0/8'] }}
  - name: local-ok
    match: {{ paths: ['/local-ok'] }}
    upstream: echo
    plugins:
      - ip_restriction: {{ allow: ['127.0.0.0/8', '::1'], deny: ['192.0.2.0/24'] }}
"#,
        listeners = listeners(2)
    )
}

fn ring_sha256_hex(s: &str) -> String {
    portcullis::plugins::credentials::sha256(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn req(a: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Got {
    let mut r = Request::get(format!("http://{a}{path}"));
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    send(r.body(Full::default()).expect("request")).await
}

fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_authenticate_and_are_stripped() {
    let up = echo_upstream().await;
    let hash = bcrypt::hash("s3cret", 4).expect("hash");
    let gw = start(&config(up.addr, &hash));
    let a = addr(&gw, "main");

    // No key: 401 with a challenge and the JSON shape; the upstream never sees it.
    let got = req(a, "/keyed", &[]).await;
    assert_eq!(got.status, 401);
    assert_eq!(got.code(), "unauthenticated");
    assert_eq!(got.headers["www-authenticate"], "Key realm=\"portcullis\"");
    assert_eq!(up.requests.load(std::sync::atomic::Ordering::SeqCst), 0);

    // A good key: identity forwarded, key removed, spoofed identity replaced.
    let got = req(
        a,
        "/keyed",
        &[("x-api-key", ALICE_KEY), ("x-consumer-name", "root")],
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.body);
    let h = &got.json()["headers"];
    assert_eq!(h["x-consumer-name"], "alice");
    assert_eq!(h["x-consumer-groups"], "gold,staff");
    assert!(h.get("x-api-key").is_none(), "key stripped: {h}");

    // The hashed key works the same.
    let got = req(a, "/keyed", &[("x-api-key", BOB_KEY)]).await;
    assert_eq!(got.json()["headers"]["x-consumer-name"], "bob");

    // From the query string, removed before proxying; other parameters kept.
    let got = req(a, &format!("/keyed?a=1&api_key={ALICE_KEY}&b=2"), &[]).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["uri"], "/keyed?a=1&b=2");

    // Wrong, empty and duplicated keys.
    for headers in [
        vec![("x-api-key", "wrong-key-000000")],
        vec![("x-api-key", "")],
        vec![("x-api-key", ALICE_KEY), ("x-api-key", BOB_KEY)],
    ] {
        let got = req(a, "/keyed", &headers).await;
        assert_eq!(got.status, 401, "{headers:?}");
        assert_eq!(got.code(), "invalid_credentials", "{headers:?}");
    }
    let got = req(a, "/keyed?api_key=x&api_key=y", &[]).await;
    assert_eq!(got.status, 401);

    // Routes without plugins still never pass on a client's identity claim.
    let got = req(a, "/plain", &[("x-consumer-name", "root")]).await;
    assert!(got.json()["headers"].get("x-consumer-name").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_groups_anonymous_and_consumer_plugins() {
    let up = echo_upstream().await;
    let hash = bcrypt::hash("s3cret", 4).expect("hash");
    let gw = start(&config(up.addr, &hash));
    let a = addr(&gw, "main");

    assert_eq!(
        req(a, "/gold", &[("x-api-key", ALICE_KEY)]).await.status,
        200
    );
    let got = req(a, "/gold", &[("x-api-key", BOB_KEY)]).await;
    assert_eq!(got.status, 403);
    assert_eq!(got.code(), "forbidden");
    assert_eq!(req(a, "/gold", &[]).await.status, 401);

    // Anonymous fallback: no key gets the guest consumer, marked as such.
    let got = req(a, "/open", &[]).await;
    assert_eq!(got.status, 200, "{}", got.body);
    let h = &got.json()["headers"];
    assert_eq!(h["x-consumer-name"], "guest");
    assert_eq!(h["x-anonymous-consumer"], "true");
    // A wrong key is refused, not downgraded to anonymous.
    assert_eq!(
        req(a, "/open", &[("x-api-key", "wrong-key-000000")])
            .await
            .status,
        401
    );
    // Bob's group is denied.
    assert_eq!(req(a, "/open", &[("x-api-key", BOB_KEY)]).await.status, 403);

    // Bob's own plugin (a 10-byte body limit) applies once he is known.
    let post = |key: &'static str| {
        Request::post(format!("http://{a}/keyed"))
            .header("x-api-key", key)
            .body(Full::new(Bytes::from_static(b"more than ten bytes")))
            .expect("request")
    };
    let got = send(post(BOB_KEY)).await;
    assert_eq!(got.status, 413, "{}", got.body);
    assert_eq!(send(post(ALICE_KEY)).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_and_first_match_wins() {
    let up = echo_upstream().await;
    let hash = bcrypt::hash("s3cret", 4).expect("hash");
    let gw = start(&config(up.addr, &hash));
    let a = addr(&gw, "main");

    let got = req(
        a,
        "/either",
        &[("authorization", &basic("alice", "s3cret"))],
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.body);
    let h = &got.json()["headers"];
    assert_eq!(h["x-consumer-name"], "alice");
    assert!(h.get("authorization").is_none(), "credential stripped: {h}");
    // Remembered: the second check needs no hash (same answer).
    let got = req(
        a,
        "/either",
        &[("authorization", &basic("alice", "s3cret"))],
    )
    .await;
    assert_eq!(got.status, 200);

    for (value, why) in [
        (basic("alice", "wrong"), "wrong password"),
        (basic("mallory", "s3cret"), "unknown user"),
        ("Basic !!!notbase64".to_string(), "malformed"),
        (
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("nocolon")
            ),
            "no colon",
        ),
    ] {
        let got = req(a, "/either", &[("authorization", &value)]).await;
        assert_eq!(got.status, 401, "{why}");
        assert_eq!(
            got.headers["www-authenticate"], "Basic realm=\"shop\", charset=\"UTF-8\"",
            "{why}"
        );
    }
    // The second plugin accepts an API key (kept, as configured).
    let got = req(a, "/either", &[("x-api-key", ALICE_KEY)]).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["headers"]["x-api-key"], ALICE_KEY);
    // Neither: both challenges are offered.
    let got = req(a, "/either", &[]).await;
    assert_eq!(got.status, 401);
    let challenges: Vec<_> = got.headers.get_all("www-authenticate").iter().collect();
    assert_eq!(challenges.len(), 2, "{challenges:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_restriction_uses_the_trusted_client_address() {
    let up = echo_upstream().await;
    let hash = bcrypt::hash("s3cret", 4).expect("hash");
    let gw = start(&config(up.addr, &hash));
    let a = addr(&gw, "main");
    let got = req(a, "/local", &[]).await;
    assert_eq!(got.status, 403);
    assert_eq!(got.code(), "address_not_allowed");
    // An untrusted peer cannot claim an allowed address.
    assert_eq!(
        req(a, "/local", &[("x-forwarded-for", "10.1.1.1")])
            .await
            .status,
        403
    );
    assert_eq!(req(a, "/local-ok", &[]).await.status, 200);

    // Behind a trusted proxy the forwarded address counts.
    let trusted = config(up.addr, &hash).replace(
        "address: 127.0.0.1:0 }",
        "address: 127.0.0.1:0, trusted_proxies: ['127.0.0.1'] }",
    );
    apply(&gw, &trusted).expect("reload");
    assert_eq!(
        req(a, "/local", &[("x-forwarded-for", "10.1.1.1")])
            .await
            .status,
        200
    );
    assert_eq!(
        req(a, "/local-ok", &[("x-forwarded-for", "192.0.2.5")])
            .await
            .status,
        403
    );
}

fn start_err(yaml: &str) -> String {
    match Gateway::start(ConfigSource::Inline(yaml.to_string())) {
        Ok(_) => panic!("config should be refused"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_plugin_configs_are_reported_with_paths() {
    let base = format!(
        "{}consumers:\n  - name: c\n    credentials:\n      basic: [{{ username: c, password: hunter22 }}, {{ username: 'a:b', password: x }}]\n      api_keys: ['sha256:xyz']\n    plugins:\n      - key_auth: {{}}\n      - acl: {{ allow: [a] }}\n      - acl: {{ allow: [b] }}\nroutes:\n  - name: r\n    respond: {{}}\n    plugins:\n      - key_auth: {{ header: 'bad header' }}\n      - acl: {{}}\n      - jwt: {{ keys: [{{ algorithm: none, secret: x }}] }}\n      - jwt: {{ keys: [{{ algorithm: HS256, secret: short }}] }}\n      - cors: {{ origins: ['*'], credentials: true }}\n      - ip_restriction: {{ allow: ['10.0.0.300/8'] }}\n      - basic_auth: {{ anonymous: nobody }}\n      - key_auth: {{ header: x, extra: 1 }}\n      - oauth2_introspection: {{ url: 'ftp://x' }}\n      - request_size_limit: {{ max: lots }}\n  - name: guarded\n    respond: {{}}\n    plugins:\n      - acl: {{ allow: [x] }}\nplugins:\n  - cors: {{ origins: ['*'] }}\n  - cors: {{ origins: ['*'] }}\n",
        listeners(1)
    );
    let text = start_err(&base);
    for needle in [
        "consumers[0].credentials.basic[0].password",
        "never in plain text",
        "consumers[0].credentials.api_keys[0]",
        "consumers[0].plugins[0].key_auth",
        "consumers[0].plugins[2].acl",
        "cannot be attached to a consumer",
        "routes[0].plugins[0].key_auth.header",
        "routes[0].plugins[1].acl",
        "routes[0].plugins[2].jwt.keys[0].algorithm",
        "`none` is not a supported algorithm",
        "routes[0].plugins[3].jwt.keys[0].secret",
        "at least 32 bytes",
        "routes[0].plugins[4].cors.credentials",
        "routes[0].plugins[5].ip_restriction.allow[0]",
        "routes[0].plugins[6].basic_auth.anonymous",
        "routes[0].plugins[7].key_auth",
        "unknown field `extra`",
        "routes[0].plugins[8].oauth2_introspection.url",
        "routes[0].plugins[9].request_size_limit.max",
        "consumers[0].credentials.basic[1].username",
        "routes[1].plugins[0].acl",
        "needs an authentication plugin",
        "plugins[1].cors",
        "attached twice",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}
