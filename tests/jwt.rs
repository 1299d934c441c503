//! `jwt` end to end: configured keys and a live JWKS server whose keys
//! rotate mid-test, the standard claim checks, consumer mapping, claims
//! forwarded as headers, and the classic attacks (alg none, RSA/HMAC key
//! confusion, forged signatures, oversized tokens) each refused.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body_util::Full;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const FIX: &str = "tests/fixtures/jwt";
const SECRET: &str = "a-shared-secret-of-at-least-32-bytes!!";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn pem(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIX}/{name}")).expect("fixture")
}

fn jwk(name: &str) -> Value {
    serde_json::from_slice(&pem(&format!("{name}.jwk.json"))).expect("jwk")
}

fn claims(extra: Value) -> Value {
    let mut c = json!({ "sub": "alice", "iss": "https://issuer.test", "aud": "portcullis",
        "exp": now() + 600, "iat": now() });
    if let (Some(base), Some(more)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in more {
            if v.is_null() {
                base.remove(k);
            } else {
                base.insert(k.clone(), v.clone());
            }
        }
    }
    c
}

fn rs256(key: &str, kid: &str, c: &Value) -> String {
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some(kid.into());
    let k = EncodingKey::from_rsa_pem(&pem(&format!("{key}.key.pem"))).expect("key");
    encode(&h, c, &k).expect("sign")
}

fn hs256(secret: &[u8], c: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        c,
        &EncodingKey::from_secret(secret),
    )
    .expect("sign")
}

/// A JWKS server whose key set the test can change; counts fetches.
struct KeyServer {
    addr: SocketAddr,
    keys: Arc<Mutex<Value>>,
    fetches: Arc<AtomicUsize>,
    _up: Upstream,
}

async fn key_server(initial: Value) -> KeyServer {
    let keys = Arc::new(Mutex::new(initial));
    let fetches = Arc::new(AtomicUsize::new(0));
    let (k, f) = (keys.clone(), fetches.clone());
    let up = upstream_with(move |_req| {
        let body = k.lock().expect("lock").to_string();
        f.fetch_add(1, Ordering::SeqCst);
        async move {
            Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .expect("response")
        }
    })
    .await;
    KeyServer {
        addr: up.addr,
        keys,
        fetches,
        _up: up,
    }
}

fn config(up: SocketAddr, jwks: SocketAddr) -> String {
    format!(
        r#"{listeners}upstreams:
  - name: echo
    targets: [{{ address: '{up}' }}]
consumers:
  - name: guest
  - name: alice
    groups: [staff]
    credentials: {{ subjects: [alice] }}
routes:
  - name: static
    match: {{ paths: ['/static'] }}
    upstream: echo
    plugins:
      - jwt:
          keys:
            - {{ algorithm: RS256, public_key_file: {FIX}/rsa1.pub.pem }}
            - {{ algorithm: HS256, secret: '{SECRET}', kid: hmac }}
            - {{ algorithm: ES256, public_key_file: {FIX}/ec.pub.pem, kid: ec }}
            - {{ algorithm: EdDSA, public_key_file: {FIX}/ed.pub.pem, kid: ed }}
          issuer: ['https://issuer.test']
          audience: [portcullis]
          leeway: 5s
          claims_to_headers: {{ sub: x-user, role: x-role }}
  - name: strict
    match: {{ paths: ['/strict'] }}
    upstream: echo
    plugins:
      - jwt:
          keys: [{{ algorithm: HS256, secret: '{SECRET}' }}]
          required_claims: [exp, tenant]
          max_age: 1h
          claims_to_headers: {{ role: x-role }}
          anonymous: guest
  - name: mixed
    match: {{ paths: ['/mixed'] }}
    upstream: echo
    plugins:
      - jwt:
          keys: [{{ algorithm: RS256, public_key_file: {FIX}/rsa2.pub.pem }}]
          jwks: {{ url: 'http://{jwks}/keys', min_refresh_interval: 1s, refresh: 1h, timeout: 1s }}
  - name: jwks
    match: {{ paths: ['/jwks'] }}
    upstream: echo
    plugins:
      - jwt:
          jwks: {{ url: 'http://{jwks}/keys', min_refresh_interval: 1s, refresh: 1h, timeout: 1s }}
          require_consumer: true
          groups_claim: roles
      - acl: {{ allow: [staff, admins] }}
"#,
        listeners = listeners(2)
    )
}

async fn call(a: SocketAddr, path: &str, token: &str) -> Got {
    send(
        Request::get(format!("http://{a}{path}"))
            .header("authorization", format!("Bearer {token}"))
            .header("x-role", "spoofed")
            .body(Full::default())
            .expect("request"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_keys_verify_each_algorithm_and_forward_claims() {
    let up = echo_upstream().await;
    let ks = key_server(json!({ "keys": [] })).await;
    let gw = start(&config(up.addr, ks.addr));
    let a = addr(&gw, "main");

    let ok = rs256("rsa1", "any", &claims(json!({ "role": "admin" })));
    let got = call(a, "/static", &ok).await;
    assert_eq!(got.status, 200, "{}", got.body);
    let h = &got.json()["headers"];
    assert_eq!(h["x-user"], "alice");
    assert_eq!(h["x-role"], "admin", "the client's copy is replaced");
    assert_eq!(h["x-consumer-name"], "alice");
    assert!(h.get("authorization").is_none(), "token stripped: {h}");
    // The second use is served from the verified-token cache, identically.
    let again = call(a, "/static", &ok).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["headers"]["x-role"], "admin");

    let mut eh = Header::new(Algorithm::ES256);
    eh.kid = Some("ec".into());
    let es = encode(
        &eh,
        &claims(json!({})),
        &EncodingKey::from_ec_pem(&pem("ec.key.pem")).expect("ec"),
    )
    .expect("sign");
    assert_eq!(call(a, "/static", &es).await.status, 200);
    let mut dh = Header::new(Algorithm::EdDSA);
    dh.kid = Some("ed".into());
    let ed = encode(
        &dh,
        &claims(json!({})),
        &EncodingKey::from_ed_pem(&pem("ed.key.pem")).expect("ed"),
    )
    .expect("sign");
    assert_eq!(call(a, "/static", &ed).await.status, 200);
    assert_eq!(
        call(a, "/static", &hs256(SECRET.as_bytes(), &claims(json!({}))))
            .await
            .status,
        200
    );
    // Without a consumer for the subject the token is still valid here.
    let got = call(
        a,
        "/static",
        &rs256("rsa1", "x", &claims(json!({ "sub": "zed" }))),
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["headers"]["x-authenticated-subject"], "zed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_and_attacks_are_refused() {
    let up = echo_upstream().await;
    let ks = key_server(json!({ "keys": [] })).await;
    let gw = start(&config(up.addr, ks.addr));
    let a = addr(&gw, "main");
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!(
        "{}.{}.",
        b64(&json!({ "alg": "none", "typ": "JWT" })),
        b64(&claims(json!({})))
    );
    // An RS256 public key used as an HS256 secret (key confusion).
    let confused = hs256(&pem("rsa1.pub.pem"), &claims(json!({})));
    let forged = rs256("rsa2", "any", &claims(json!({})));
    let ok = rs256("rsa1", "any", &claims(json!({})));
    let tampered = {
        let mut parts: Vec<String> = ok.split('.').map(String::from).collect();
        parts[1] = b64(&claims(json!({ "sub": "admin" })));
        parts.join(".")
    };
    let cases: Vec<(String, &str, &str)> = vec![
        (none, "alg none", "algorithm that is not accepted"),
        (confused, "RS/HS confusion", "signature"),
        (forged, "signed by another key", "signature"),
        (tampered, "tampered payload", "signature"),
        (
            rs256("rsa1", "k", &claims(json!({ "exp": now() - 60 }))),
            "expired",
            "expired",
        ),
        (
            rs256("rsa1", "k", &claims(json!({ "nbf": now() + 600 }))),
            "not yet valid",
            "not valid yet",
        ),
        (
            rs256("rsa1", "k", &claims(json!({ "aud": "someone-else" }))),
            "wrong audience",
            "audience",
        ),
        (
            rs256("rsa1", "k", &claims(json!({ "iss": "https://evil.test" }))),
            "wrong issuer",
            "issuer",
        ),
        (
            rs256("rsa1", "k", &claims(json!({ "exp": null }))),
            "no exp",
            "`exp`",
        ),
        (
            rs256("rsa1", "k", &claims(json!({ "iat": now() + 3600 }))),
            "issued in the future",
            "future",
        ),
        ("not.a.jwt".to_string(), "garbage", "malformed"),
        ("x".repeat(9000), "oversized", "larger than"),
    ];
    for (token, why, message) in cases {
        let got = call(a, "/static", &token).await;
        assert_eq!(got.status, 401, "{why}: {}", got.body);
        assert_eq!(
            got.headers["www-authenticate"], "Bearer realm=\"portcullis\"",
            "{why}"
        );
        let msg = got.json()["error"]["message"]
            .as_str()
            .unwrap_or("")
            .to_string();
        assert!(msg.contains(message), "{why}: {msg}");
    }
    // Custom required claims, and `iat` once `max_age` is set.
    let secret = SECRET.as_bytes();
    let got = call(
        a,
        "/strict",
        &hs256(secret, &claims(json!({ "tenant": "t1" }))),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.body);
    let got = call(a, "/strict", &hs256(secret, &claims(json!({})))).await;
    assert_eq!(got.status, 401);
    assert!(got.body.contains("`tenant`"), "{}", got.body);
    let got = call(
        a,
        "/strict",
        &hs256(secret, &claims(json!({ "tenant": "t1", "iat": null }))),
    )
    .await;
    assert_eq!(got.status, 401);
    assert!(got.body.contains("`iat`"), "{}", got.body);
    let old = claims(json!({ "tenant": "t1", "iat": now() - 7200 }));
    assert_eq!(call(a, "/strict", &hs256(secret, &old)).await.status, 401);
    // Anonymous callers cannot smuggle in a claim header either.
    let got = get(a, "/strict").await;
    assert_eq!(got.status, 200);
    let got = send(
        Request::get(format!("http://{a}/strict"))
            .header("x-role", "admin")
            .body(Full::default())
            .expect("request"),
    )
    .await;
    assert!(
        got.json()["headers"].get("x-role").is_none(),
        "{}",
        got.body
    );
    let before = up.requests.load(Ordering::SeqCst);

    // Two Authorization headers are refused outright.
    let got = send(
        Request::get(format!("http://{a}/static"))
            .header("authorization", "Bearer a")
            .header("authorization", "Bearer b")
            .body(Full::default())
            .expect("request"),
    )
    .await;
    assert_eq!(got.status, 401);
    assert_eq!(
        up.requests.load(Ordering::SeqCst),
        before,
        "the upstream saw none of the bad ones"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_keys_rotate_and_unknown_kids_are_rate_limited() {
    let up = echo_upstream().await;
    let ks = key_server(json!({ "keys": [jwk("rsa1")] })).await;
    let gw = start(&config(up.addr, ks.addr));
    let a = addr(&gw, "main");
    let t1 = rs256("rsa1", "rsa1", &claims(json!({ "roles": ["admins"] })));
    // The background fetch or the first request loads the set.
    let got = call(a, "/jwks", &t1).await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.json()["headers"]["x-consumer-groups"], "staff,admins");
    // A configured key without `kid` that does not verify the token leaves
    // the JWKS keys to try; a token neither verifies is still refused.
    assert_eq!(call(a, "/mixed", &t1).await.status, 200);
    assert_eq!(
        call(a, "/mixed", &rs256("rsa2", "other", &claims(json!({}))))
            .await
            .status,
        200
    );
    let foreign = hs256(SECRET.as_bytes(), &claims(json!({})));
    assert_eq!(call(a, "/mixed", &foreign).await.status, 401);

    // Rotation: the server now publishes rsa2 only. A token with the new kid
    // triggers one refresh and passes; old tokens stop working.
    *ks.keys.lock().expect("lock") = json!({ "keys": [jwk("rsa2")] });
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let t2 = rs256("rsa2", "rsa2", &claims(json!({})));
    let got = call(a, "/jwks", &t2).await;
    assert_eq!(got.status, 200, "{}", got.body);
    let got = call(a, "/jwks", &t1).await;
    assert_eq!(got.status, 401, "{}", got.body);

    // A flood of unknown kids costs at most one fetch per interval.
    let before = ks.fetches.load(Ordering::SeqCst);
    for i in 0..20 {
        let t = rs256("rsa1", &format!("forged-{i}"), &claims(json!({})));
        assert_eq!(call(a, "/jwks", &t).await.status, 401);
    }
    let after = ks.fetches.load(Ordering::SeqCst);
    assert!(
        after - before <= 1,
        "{} fetches for 20 unknown kids",
        after - before
    );

    // A reload that keeps the plugin's settings keeps its key set: no refetch.
    let fetched = ks.fetches.load(Ordering::SeqCst);
    apply(&gw, &config(up.addr, ks.addr)).expect("reload");
    assert_eq!(call(a, "/jwks", &t2).await.status, 200);
    assert_eq!(
        ks.fetches.load(Ordering::SeqCst),
        fetched,
        "state kept across the reload"
    );

    // Not a known consumer: refused where one is required.
    let stranger = rs256("rsa2", "rsa2", &claims(json!({ "sub": "stranger" })));
    assert_eq!(call(a, "/jwks", &stranger).await.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_jwks_fails_closed_then_recovers() {
    let up = echo_upstream().await;
    // Reserve a port with nothing listening yet.
    let spare = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let jwks_addr = spare.local_addr().expect("addr");
    drop(spare);
    let gw = start(&config(up.addr, jwks_addr));
    let a = addr(&gw, "main");
    let t1 = rs256("rsa1", "rsa1", &claims(json!({})));
    let got = call(a, "/jwks", &t1).await;
    assert_eq!(got.status, 503, "{}", got.body);
    assert_eq!(got.code(), "auth_unavailable");

    // The key server comes up on that port; the next attempt (after the
    // minimum interval) loads the keys.
    let listener = tokio::net::TcpListener::bind(jwks_addr)
        .await
        .expect("rebind");
    let body = json!({ "keys": [jwk("rsa1")] }).to_string();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let body = body.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_r| {
                    let body = body.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                            body,
                        ))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let got = call(a, "/jwks", &t1).await;
    assert_eq!(got.status, 200, "{}", got.body);
}
