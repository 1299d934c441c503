//! gRPC-Web translation, for routes with `grpc_web: true`: browsers speak
//! gRPC-Web (over HTTP/1.1 or HTTP/2, binary or base64 "text"), the upstream
//! speaks gRPC over HTTP/2. Runs in the forward step: the request's content
//! type and body are turned into gRPC on the way up, and the response's
//! trailers are turned into a final length-prefixed frame in the body on the
//! way down, because browsers cannot read HTTP trailers.
//!
//! Wire format (the gRPC-Web protocol spec): the body is the same sequence of
//! gRPC frames (`flag: u8, length: u32 BE, message`); the trailers travel as
//! one more frame whose flag has the high bit set (`0x80`) and whose payload
//! is `name:value\r\n` lines. In text mode the whole body is base64.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use super::body::{fail, BodyError, FailureSlot, ProxyBody, ResponseBody};

/// Decodes padded and unpadded base64 alike: browsers pad, but a body cut at
/// an arbitrary point has its last group unpadded until the rest arrives.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Which gRPC-Web encoding a request uses; the response uses the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `application/grpc-web[+proto|+json]`: frames as they are.
    Binary,
    /// `application/grpc-web-text[+proto]`: frames in base64.
    Text,
}

/// The gRPC-Web mode of a request, from its content type (`None` for any
/// other request, gRPC included).
pub fn detect(headers: &HeaderMap) -> Option<Mode> {
    let ct = headers.get(header::CONTENT_TYPE)?.as_bytes();
    let rest = ct.strip_prefix(b"application/grpc-web")?;
    match rest {
        [] | [b'+' | b';', ..] => Some(Mode::Binary),
        [b'-', b't', b'e', b'x', b't'] | [b'-', b't', b'e', b'x', b't', b'+' | b';', ..] => {
            Some(Mode::Text)
        }
        _ => None,
    }
}

/// The content type of a gateway error (a trailers-only gRPC status) for a
/// request with content type `ct`: gRPC-Web clients get their own encoding
/// back, gRPC clients `application/grpc`, anyone else `None` (JSON errors).
pub fn error_content_type(ct: Option<&HeaderValue>) -> Option<&'static str> {
    let v = ct?.as_bytes();
    if v.starts_with(b"application/grpc-web-text") {
        Some("application/grpc-web-text+proto")
    } else if v.starts_with(b"application/grpc-web") {
        Some("application/grpc-web+proto")
    } else if v.starts_with(b"application/grpc") {
        Some("application/grpc")
    } else {
        None
    }
}

/// Rewrites a gRPC-Web request's headers (after hop-by-hop stripping) into
/// gRPC ones: the gRPC content type with the same suffix, `te: trailers`,
/// and no `content-length` (text bodies shrink when decoded).
pub fn request_headers(h: &mut HeaderMap) {
    if let Some(ct) = h.get(header::CONTENT_TYPE) {
        let v = ct.as_bytes();
        let suffix = v
            .strip_prefix(b"application/grpc-web-text")
            .or_else(|| v.strip_prefix(b"application/grpc-web"))
            .unwrap_or_default();
        let mut grpc = b"application/grpc".to_vec();
        grpc.extend_from_slice(suffix);
        if let Ok(v) = HeaderValue::from_bytes(&grpc) {
            h.insert(header::CONTENT_TYPE, v);
        }
    }
    h.insert(header::TE, HeaderValue::from_static("trailers"));
    h.remove(header::CONTENT_LENGTH);
}

/// The request body for the upstream: text bodies are base64-decoded as
/// they stream (a failure is also kept in `failure`); binary bodies pass as
/// they are.
pub fn request_body(body: ProxyBody, mode: Mode, failure: Option<FailureSlot>) -> ProxyBody {
    match mode {
        Mode::Binary => body,
        Mode::Text => DecodeText {
            inner: body,
            pending: Vec::new(),
            failure,
        }
        .boxed(),
    }
}

/// Turns the upstream's gRPC response into a gRPC-Web one. A response that
/// is not gRPC (an upstream's plain 404, say) is passed on untouched.
pub fn response(resp: Response<ResponseBody>, mode: Mode) -> Response<ResponseBody> {
    let (mut parts, body) = resp.into_parts();
    let grpc_suffix = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.as_bytes().strip_prefix(b"application/grpc"))
        .map(<[u8]>::to_vec);
    let Some(suffix) = grpc_suffix else {
        return Response::from_parts(parts, body);
    };
    let mut ct = match mode {
        Mode::Binary => b"application/grpc-web".to_vec(),
        Mode::Text => b"application/grpc-web-text".to_vec(),
    };
    // Browsers' gRPC-Web libraries expect an explicit message format.
    if suffix.is_empty() {
        ct.extend_from_slice(b"+proto");
    } else {
        ct.extend_from_slice(&suffix);
    }
    if let Ok(v) = HeaderValue::from_bytes(&ct) {
        parts.headers.insert(header::CONTENT_TYPE, v);
    }
    // The trailer frame (and base64) change the length.
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::TRAILER);
    let body = ResponseBody::GrpcWeb {
        inner: Box::pin(EncodeWeb {
            inner: body,
            mode,
            carry: Vec::new(),
            done: false,
        }),
    };
    Response::from_parts(parts, body)
}

/// The trailer frame for `trailers`: flag `0x80`, length, `name:value\r\n`
/// lines with lowercase names (HeaderMap names are lowercase already).
pub fn trailer_frame(trailers: &HeaderMap) -> Bytes {
    let mut block = Vec::new();
    for (name, value) in trailers {
        block.extend_from_slice(name.as_str().as_bytes());
        block.push(b':');
        block.extend_from_slice(value.as_bytes());
        block.extend_from_slice(b"\r\n");
    }
    let mut frame = Vec::with_capacity(5 + block.len());
    frame.push(0x80);
    // A trailer block comes from a header map the pool already size-limited.
    frame.extend_from_slice(&u32::try_from(block.len()).unwrap_or(u32::MAX).to_be_bytes());
    frame.extend_from_slice(&block);
    Bytes::from(frame)
}

pin_project_lite::pin_project! {
    /// A gRPC-Web text request body, base64-decoded as it streams.
    struct DecodeText {
        #[pin]
        inner: ProxyBody,
        // Base64 characters not yet decoded (an incomplete group).
        pending: Vec<u8>,
        failure: Option<FailureSlot>,
    }
}

/// Decodes every complete 4-character group in `pending`, leaving the rest.
/// A padded group ends one base64 segment; clients may send several
/// segments one after the other, so each is decoded on its own.
fn decode_groups(pending: &mut Vec<u8>, last: bool) -> Result<Bytes, BodyError> {
    pending.retain(|b| !b.is_ascii_whitespace());
    let usable = if last {
        pending.len()
    } else {
        pending.len() / 4 * 4
    };
    let chars: Vec<u8> = pending.drain(..usable).collect();
    let mut out = Vec::with_capacity(chars.len() / 4 * 3);
    let malformed = BodyError::Malformed("the gRPC-Web text body is not valid base64");
    for segment in chars.split_inclusive(|&b| b == b'=') {
        // `==` splits into `…=` and `=`: the lone `=` belongs to the group before.
        if segment == b"=" {
            continue;
        }
        LENIENT
            .decode_vec(segment, &mut out)
            .map_err(|_| malformed)?;
    }
    Ok(Bytes::from(out))
}

impl Body for DecodeText {
    type Data = Bytes;
    type Error = super::body::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        loop {
            match ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        this.pending.extend_from_slice(&data);
                        let out = decode_groups(this.pending, false)
                            .map_err(|e| fail(this.failure.as_ref(), e))?;
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    // Trailers on a request are not part of gRPC-Web; drop them.
                    Err(_) => continue,
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None if this.pending.is_empty() => return Poll::Ready(None),
                None => {
                    let out = decode_groups(this.pending, true)
                        .map_err(|e| fail(this.failure.as_ref(), e))?;
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

pin_project_lite::pin_project! {
    /// A gRPC response body as gRPC-Web: data as it comes (base64 in text
    /// mode), then the trailers as a final frame.
    pub struct EncodeWeb {
        #[pin]
        inner: ResponseBody,
        mode: Mode,
        // Text mode: up to two bytes not yet encoded, because base64 works
        // on groups of three and padding may only come at the very end.
        carry: Vec<u8>,
        done: bool,
    }
}

impl EncodeWeb {
    /// Encodes `data` for the client: as is, or base64 with the carry.
    fn encode(mode: Mode, carry: &mut Vec<u8>, data: &[u8], last: bool) -> Bytes {
        if mode == Mode::Binary {
            return Bytes::copy_from_slice(data);
        }
        carry.extend_from_slice(data);
        let n = if last {
            carry.len()
        } else {
            carry.len() / 3 * 3
        };
        let out = STANDARD.encode(&carry[..n]);
        carry.drain(..n);
        Bytes::from(out)
    }
}

impl Body for EncodeWeb {
    type Data = Bytes;
    type Error = super::body::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        loop {
            match ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if *this.mode == Mode::Binary => {
                        return Poll::Ready(Some(Ok(Frame::data(data))))
                    }
                    Ok(data) => {
                        let out = Self::encode(*this.mode, this.carry, &data, false);
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(frame) => {
                        let Ok(trailers) = frame.into_trailers() else {
                            continue;
                        };
                        *this.done = true;
                        let block = trailer_frame(&trailers);
                        let out = Self::encode(*this.mode, this.carry, &block, true);
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    *this.done = true;
                    if this.carry.is_empty() {
                        return Poll::Ready(None);
                    }
                    let out = Self::encode(*this.mode, this.carry, &[], true);
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    fn headers(ct: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        h
    }

    #[test]
    fn modes_come_from_the_content_type() {
        let cases = [
            ("application/grpc-web", Some(Mode::Binary)),
            ("application/grpc-web+proto", Some(Mode::Binary)),
            ("application/grpc-web;charset=utf-8", Some(Mode::Binary)),
            ("application/grpc-web-text", Some(Mode::Text)),
            ("application/grpc-web-text+proto", Some(Mode::Text)),
            ("application/grpc", None),
            ("application/grpc+proto", None),
            ("application/grpc-webby", None),
            ("application/grpc-web-textual", None),
            ("text/plain", None),
        ];
        for (ct, want) in cases {
            assert_eq!(detect(&headers(ct)), want, "{ct}");
        }
        assert_eq!(detect(&HeaderMap::new()), None);
    }

    #[test]
    fn request_headers_become_grpc() {
        let mut h = headers("application/grpc-web-text+proto");
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("12"));
        request_headers(&mut h);
        assert_eq!(h[header::CONTENT_TYPE], "application/grpc+proto");
        assert_eq!(h[header::TE], "trailers");
        assert!(!h.contains_key(header::CONTENT_LENGTH));
        let mut h = headers("application/grpc-web");
        request_headers(&mut h);
        assert_eq!(h[header::CONTENT_TYPE], "application/grpc");
    }

    #[test]
    fn error_content_types_follow_the_request() {
        let ct = |v: &str| error_content_type(Some(&HeaderValue::from_str(v).unwrap()));
        assert_eq!(
            ct("application/grpc-web-text"),
            Some("application/grpc-web-text+proto")
        );
        assert_eq!(
            ct("application/grpc-web+proto"),
            Some("application/grpc-web+proto")
        );
        assert_eq!(ct("application/grpc+proto"), Some("application/grpc"));
        assert_eq!(ct("application/json"), None);
        assert_eq!(error_content_type(None), None);
    }

    async fn decode(chunks: Vec<&'static [u8]>) -> Result<Vec<u8>, String> {
        let stream = futures_stream(chunks);
        let slot = FailureSlot::default();
        let body = request_body(stream, Mode::Text, Some(slot.clone()));
        match body.collect().await {
            Ok(c) => {
                assert_eq!(slot.get(), None);
                Ok(c.to_bytes().to_vec())
            }
            Err(e) => {
                assert!(
                    matches!(slot.get(), Some(BodyError::Malformed(_))),
                    "the failure is kept"
                );
                Err(e.to_string())
            }
        }
    }

    fn futures_stream(chunks: Vec<&'static [u8]>) -> ProxyBody {
        let frames: Vec<Result<Frame<Bytes>, super::super::body::BoxError>> = chunks
            .into_iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c))))
            .collect();
        StreamBody::new(Iter(frames.into_iter())).boxed()
    }

    /// A minimal stream over an iterator (no futures-util dependency).
    struct Iter<I>(I);
    impl<I: Iterator + Unpin> futures_core::Stream for Iter<I> {
        type Item = I::Item;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<I::Item>> {
            Poll::Ready(self.0.next())
        }
    }

    #[tokio::test]
    async fn text_bodies_decode_across_any_split() {
        let raw = b"\x00\x00\x00\x00\x05hello";
        let b64 = STANDARD.encode(raw).into_bytes().leak();
        for cut in 0..b64.len() {
            let (a, b) = b64.split_at(cut);
            assert_eq!(decode(vec![a, b]).await.unwrap(), raw, "cut at {cut}");
        }
        // Two padded segments back to back (one per message), with a newline.
        let two: &'static [u8] = b"AAAAAAFh\nAAAAAAJiYw==AAAAAAFk";
        assert_eq!(
            decode(vec![two]).await.unwrap(),
            b"\0\0\0\0\x01a\0\0\0\0\x02bc\0\0\0\0\x01d"
        );
        let single_pad: &'static [u8] = b"YWI=YQ==";
        assert_eq!(decode(vec![single_pad]).await.unwrap(), b"aba");
        assert!(decode(vec![b"not*base64"])
            .await
            .unwrap_err()
            .contains("not valid base64"));
    }

    /// A gRPC response with body `msg`, through [`response`] in `mode`.
    async fn encode(mode: Mode, msg: &'static [u8]) -> Vec<u8> {
        let mut resp = Response::new(super::super::body::full(msg));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        let resp = response(resp, mode);
        let want = match mode {
            Mode::Binary => "application/grpc-web+proto",
            Mode::Text => "application/grpc-web-text+proto",
        };
        assert_eq!(resp.headers()[header::CONTENT_TYPE], want);
        let body = resp.into_body().collect().await.unwrap();
        body.to_bytes().to_vec()
    }

    #[tokio::test]
    async fn responses_become_grpc_web() {
        let msg: &'static [u8] = b"\0\0\0\0\x02hi";
        assert_eq!(encode(Mode::Binary, msg).await, msg);
        let text = encode(Mode::Text, msg).await;
        assert_eq!(STANDARD.decode(&text).unwrap(), msg);
        let mut t = HeaderMap::new();
        t.insert("grpc-status", HeaderValue::from_static("0"));
        t.insert("grpc-message", HeaderValue::from_static("ok"));
        assert_eq!(
            &trailer_frame(&t)[..],
            b"\x80\0\0\0\x20grpc-status:0\r\ngrpc-message:ok\r\n"
        );
        // Not gRPC: untouched.
        let resp = Response::new(super::super::body::full("nope"));
        let resp = response(resp, Mode::Text);
        assert!(resp.headers().get(header::CONTENT_TYPE).is_none());
        assert_eq!(
            &resp.into_body().collect().await.unwrap().to_bytes()[..],
            b"nope"
        );
    }

    #[test]
    fn text_encoding_carries_partial_groups() {
        let mut carry = Vec::new();
        let mut out = Vec::new();
        for chunk in [&b"a"[..], b"bcd", b"ef", b"g"] {
            out.extend_from_slice(&EncodeWeb::encode(Mode::Text, &mut carry, chunk, false));
        }
        out.extend_from_slice(&EncodeWeb::encode(Mode::Text, &mut carry, b"", true));
        assert_eq!(out, STANDARD.encode("abcdefg").as_bytes());
    }
}
