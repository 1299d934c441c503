//! gRPC-Web through the gateway: browsers' binary and text encodings over
//! HTTP/1.1 and HTTP/2 become gRPC to an HTTP/2 service, trailers come back
//! as the last frame of the body, gateway errors are gRPC statuses in the
//! client's encoding, and CORS preflights are answered.

mod common;

use std::net::SocketAddr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use common::grpc::{grpc_frame, grpc_upstream};
use common::*;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};

fn config(up: SocketAddr) -> String {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    format!(
        r#"gateway: {{ workers: 1 }}
listeners:
  - {{ name: main, address: 127.0.0.1:0 }}
upstreams:
  - {{ name: svc, targets: [{{ address: '{up}' }}], http2: true }}
  - {{ name: gone, targets: [{{ address: '{dead}' }}], http2: true }}
routes:
  - name: web
    match: {{ paths: ['/helloworld.Greeter'] }}
    upstream: svc
    grpc_web: true
    plugins:
      - cors:
          origins: ['https://app.example']
          methods: [POST]
          headers: [content-type, x-grpc-web, x-user-agent, grpc-timeout, x-count]
          expose_headers: [grpc-status, grpc-message]
  - {{ name: down, match: {{ paths: ['/down.Service'] }}, upstream: gone, grpc_web: true }}
"#
    )
}

struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

/// A gRPC-Web call over HTTP/1.1, as a browser library makes it.
async fn web_call(
    a: SocketAddr,
    path: &str,
    ct: &str,
    body: Bytes,
    extra: &[(&str, &str)],
) -> Reply {
    let mut req = Request::post(format!("http://{a}{path}"))
        .header("content-type", ct)
        .header("x-grpc-web", "1")
        .header("x-user-agent", "grpc-web-javascript/0.1");
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let resp = client()
        .request(req.body(Full::new(body)).expect("request"))
        .await
        .expect("response");
    let (parts, body) = resp.into_parts();
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: body.collect().await.expect("body").to_bytes(),
    }
}

/// Splits a gRPC-Web body into its frames: (flag, payload).
fn frames(mut body: &[u8]) -> Vec<(u8, String)> {
    let mut out = Vec::new();
    while body.len() >= 5 {
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        assert!(body.len() >= 5 + len, "truncated frame in {body:?}");
        out.push((
            body[0],
            String::from_utf8_lossy(&body[5..5 + len]).into_owned(),
        ));
        body = &body[5 + len..];
    }
    assert!(body.is_empty(), "trailing bytes {body:?}");
    out
}

const OK_TRAILERS: &str = "grpc-status:0\r\ngrpc-message:done\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_and_text_calls_carry_their_trailers_in_the_body() {
    let up = grpc_upstream().await;
    let gw = start(&config(up));
    let a = addr(&gw, "main");

    let bin = web_call(
        a,
        "/helloworld.Greeter/SayHello",
        "application/grpc-web+proto",
        grpc_frame(b"hello"),
        &[],
    )
    .await;
    assert_eq!(bin.status, 200);
    assert_eq!(bin.headers["content-type"], "application/grpc-web+proto");
    assert_eq!(
        frames(&bin.body),
        [
            (0, "reply 0 to 10 bytes".into()),
            (0x80, OK_TRAILERS.into())
        ],
        "the service got a gRPC request with te: trailers and one whole frame"
    );

    let text_req = Bytes::from(STANDARD.encode(grpc_frame(b"hello")));
    let text = web_call(
        a,
        "/helloworld.Greeter/Stream",
        "application/grpc-web-text",
        text_req,
        &[("x-count", "3")],
    )
    .await;
    assert_eq!(text.status, 200);
    assert_eq!(
        text.headers["content-type"],
        "application/grpc-web-text+proto"
    );
    let decoded = STANDARD
        .decode(&text.body)
        .expect("the body is one base64 text");
    let got = frames(&decoded);
    assert_eq!(got.len(), 4, "{got:?}");
    assert!(got[..3]
        .iter()
        .all(|(flag, m)| *flag == 0 && m == "reply 0 to 10 bytes" || m.starts_with("reply ")));
    assert_eq!(got[3], (0x80, OK_TRAILERS.into()));

    // Browsers on HTTP/2 (h2c here) get the same translation.
    let mut sender = h2c(a).await;
    let resp = sender
        .send_request(
            Request::post(format!("http://{a}/helloworld.Greeter/SayHello"))
                .header("content-type", "application/grpc-web")
                .body(Full::new(grpc_frame(b"hello")))
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(resp.headers()["content-type"], "application/grpc-web+proto");
    let collected = resp.into_body().collect().await.expect("body");
    assert!(
        collected.trailers().is_none(),
        "trailers travel in the body"
    );
    assert_eq!(
        frames(&collected.to_bytes()),
        [
            (0, "reply 0 to 10 bytes".into()),
            (0x80, OK_TRAILERS.into())
        ]
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_grpc_statuses_and_preflights_are_answered() {
    let up = grpc_upstream().await;
    let gw = start(&config(up));
    let a = addr(&gw, "main");

    let down = web_call(
        a,
        "/down.Service/Call",
        "application/grpc-web+proto",
        grpc_frame(b"x"),
        &[],
    )
    .await;
    assert_eq!(down.status, 200);
    assert_eq!(down.headers["content-type"], "application/grpc-web+proto");
    assert_eq!(down.headers["grpc-status"], "14", "UNAVAILABLE");
    let missing = web_call(
        a,
        "/no.Such/Method",
        "application/grpc-web-text",
        Bytes::from_static(b"AAAAAAA="),
        &[],
    )
    .await;
    assert_eq!(
        missing.headers["content-type"],
        "application/grpc-web-text+proto"
    );
    assert_eq!(missing.headers["grpc-status"], "12", "UNIMPLEMENTED");
    let garbled = web_call(
        a,
        "/helloworld.Greeter/SayHello",
        "application/grpc-web-text",
        Bytes::from_static(b"not*base64!"),
        &[],
    )
    .await;
    assert_eq!(
        garbled.headers["grpc-status"], "3",
        "INVALID_ARGUMENT: {:?}",
        garbled.headers
    );
    assert_eq!(garbled.headers["x-portcullis-error"], "bad_request_body");

    let preflight = send(
        Request::options(format!("http://{a}/helloworld.Greeter/SayHello"))
            .header("origin", "https://app.example")
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type,x-grpc-web,x-user-agent",
            )
            .body(Full::default())
            .expect("request"),
    )
    .await;
    assert_eq!(preflight.status, 204);
    assert_eq!(
        preflight.headers["access-control-allow-origin"],
        "https://app.example"
    );
    let call = web_call(
        a,
        "/helloworld.Greeter/SayHello",
        "application/grpc-web+proto",
        grpc_frame(b"hello"),
        &[("origin", "https://app.example")],
    )
    .await;
    assert_eq!(
        call.headers["access-control-allow-origin"],
        "https://app.example"
    );
    let exposed = call.headers["access-control-expose-headers"]
        .to_str()
        .expect("ascii");
    assert!(
        exposed.contains("grpc-status") && exposed.contains("grpc-message"),
        "{exposed}"
    );
    assert_eq!(frames(&call.body).len(), 2);
    gw.shutdown().await;
}
