//! A copy of a body-less request's head, kept while the request is out so
//! that it can be sent again: on another connection when a pooled one turns
//! out to be closed under it (the keep-alive race), or to another target
//! when a retry policy allows it. Made for every such request and almost
//! never used, so it is built to be cheap to make rather than to use.
//!
//! Cloning the request's `HeaderMap` cost two allocations and an atomic
//! increment (and later a decrement) per header value and for the URI,
//! since their bytes are shared with the buffer the client's request was
//! read into. Here the URI and every header are written into one buffer:
//! one allocation and plain copies. The request is parsed back from it
//! only when it is sent again.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Uri, Version};

use crate::proxy::body::{empty, ProxyBody};

/// The method, version, URI and headers of a request without a body.
#[derive(Debug)]
pub struct HeadCopy {
    method: Method,
    version: Version,
    /// The URI, then each header as its name's and value's lengths (four
    /// bytes each, little-endian) followed by the name and the value.
    buf: Vec<u8>,
    /// Where the URI ends in `buf`.
    uri_len: usize,
    /// How many headers follow it.
    headers: usize,
}

impl HeadCopy {
    /// Copies `req`'s head (not its extensions, nor its body: only
    /// body-less requests are sent again).
    pub fn of<B>(req: &Request<B>) -> HeadCopy {
        let uri = req.uri();
        let headers = req.headers();
        let mut buf = Vec::with_capacity(64 + headers.len() * 48);
        if let Some(authority) = uri.authority() {
            // Absolute form (HTTP/2 upstreams carry the host here), or the
            // authority form of CONNECT.
            if let Some(scheme) = uri.scheme_str() {
                buf.extend_from_slice(scheme.as_bytes());
                buf.extend_from_slice(b"://");
            }
            buf.extend_from_slice(authority.as_str().as_bytes());
        }
        if let Some(pq) = uri.path_and_query() {
            buf.extend_from_slice(pq.as_str().as_bytes());
        }
        let uri_len = buf.len();
        for (name, value) in headers {
            let (name, value) = (name.as_str().as_bytes(), value.as_bytes());
            buf.extend_from_slice(&(name.len() as u32).to_le_bytes());
            buf.extend_from_slice(&(value.len() as u32).to_le_bytes());
            buf.extend_from_slice(name);
            buf.extend_from_slice(value);
        }
        HeadCopy {
            method: req.method().clone(),
            version: req.version(),
            buf,
            uri_len,
            headers: headers.len(),
        }
    }

    /// The request again, with an empty body; as often as it is needed
    /// (a request may be replayed and then retried). `None` only if a part
    /// no longer parses, which cannot happen for parts copied from a
    /// request (its URI and headers were valid); the caller then gives up
    /// on sending it again, as it would without a copy.
    pub fn request(&self) -> Option<Request<ProxyBody>> {
        // Copied once more: this is the rare path, and the copy stays
        // whole for the next time.
        let buf = Bytes::copy_from_slice(&self.buf);
        let uri = if self.uri_len == 0 {
            Uri::default()
        } else {
            Uri::from_maybe_shared(buf.slice(..self.uri_len)).ok()?
        };
        let mut headers = HeaderMap::with_capacity(self.headers);
        let mut at = self.uri_len;
        let len = |at: usize| -> Option<usize> {
            let b: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
            Some(u32::from_le_bytes(b) as usize)
        };
        while at < buf.len() {
            let (n, v) = (len(at)?, len(at + 4)?);
            let name_at = at + 8;
            let value_at = name_at + n;
            at = value_at + v;
            if at > buf.len() {
                return None;
            }
            let name = HeaderName::from_bytes(buf.get(name_at..value_at)?).ok()?;
            let value = HeaderValue::from_maybe_shared(buf.slice(value_at..at)).ok()?;
            headers.append(name, value);
        }
        let mut req = Request::new(empty());
        *req.method_mut() = self.method.clone();
        *req.version_mut() = self.version;
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        Some(req)
    }
}

#[cfg(test)]
mod tests {
    use super::HeadCopy;
    use http::{Method, Request, Version};

    fn round_trip(req: Request<()>) {
        let back = HeadCopy::of(&req).request().expect("a copied head parses");
        assert_eq!(back.method(), req.method());
        assert_eq!(back.version(), req.version());
        assert_eq!(back.uri(), req.uri());
        assert_eq!(back.uri().to_string(), req.uri().to_string());
        assert_eq!(back.headers(), req.headers());
        // Repeated names keep their values' order.
        for name in req.headers().keys() {
            let a: Vec<_> = req.headers().get_all(name).iter().collect();
            let b: Vec<_> = back.headers().get_all(name).iter().collect();
            assert_eq!(a, b, "{name}");
        }
    }

    #[test]
    fn a_copied_head_comes_back_the_same() {
        round_trip(
            Request::get("/users/42?expand=orders&x=%20y")
                .header("host", "api.internal:8080")
                .header("x-forwarded-for", "10.0.0.1")
                .header("x-request-id", "abc")
                .header("accept", "text/html")
                .header("accept", "application/json")
                .header("x-custom-header-with-a-long-name", "v")
                .header("cookie", &b"a=\x80\xff; b=2\tc"[..])
                .header("empty", "")
                .body(())
                .unwrap(),
        );
        // Absolute form, as sent to HTTP/2 upstreams.
        round_trip(
            Request::builder()
                .method(Method::DELETE)
                .version(Version::HTTP_2)
                .uri("https://svc.example:8443/a/b?c")
                .body(())
                .unwrap(),
        );
        // Authority form, and a request without headers.
        round_trip(
            Request::builder()
                .method(Method::CONNECT)
                .uri("example.com:443")
                .body(())
                .unwrap(),
        );
        round_trip(Request::get("/").body(()).unwrap());
        round_trip(
            Request::get("*")
                .version(Version::HTTP_10)
                .body(())
                .unwrap(),
        );
    }

    #[test]
    fn a_copy_that_does_not_parse_back_gives_none_not_a_panic() {
        let req = Request::get("/a").header("x-k", "v").body(()).unwrap();
        let good = HeadCopy::of(&req);
        assert!(good.request().is_some());
        // Used twice: the copy stays whole.
        assert_eq!(good.request().expect("again").headers()["x-k"], "v");
        let broken = |edit: &dyn Fn(&mut HeadCopy)| {
            let mut c = HeadCopy::of(&req);
            edit(&mut c);
            c.request()
        };
        // Cut short: in a value, and in a length.
        assert!(broken(&|c| {
            c.buf.pop();
        })
        .is_none());
        assert!(broken(&|c| c.buf.truncate(c.uri_len + 6)).is_none());
        // A value length that runs past the end.
        assert!(broken(&|c| c.buf[c.uri_len + 4] = 200).is_none());
        // A name that is not a header name, a value with a control byte.
        assert!(broken(&|c| c.buf[c.uri_len + 8] = b' ').is_none());
        assert!(broken(&|c| *c.buf.last_mut().expect("value") = b'\n').is_none());
        // A URI that does not parse.
        assert!(broken(&|c| c.buf[0] = b' ').is_none());
    }

    #[test]
    fn an_extension_method_is_kept() {
        let req = Request::builder()
            .method(Method::from_bytes(b"PURGE").unwrap())
            .uri("/cache/x")
            .body(())
            .unwrap();
        round_trip(req);
    }
}
