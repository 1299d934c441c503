//! Request IDs: taken from the client when well-formed, otherwise generated.
//! Generation is a per-thread random prefix and counter, so it never contends
//! between workers and never repeats within a process.

use crate::observability::span::hex_into;
use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};

use http::HeaderValue;

thread_local! {
    static STATE: (u64, Cell<u64>) = {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(std::process::id() as u64);
        (h.finish(), Cell::new(0))
    };
}

/// A new 32-hex-digit request ID.
pub fn generate() -> HeaderValue {
    let (prefix, n) = STATE.with(|(p, c)| {
        let n = c.get().wrapping_add(1);
        c.set(n);
        (*p, n)
    });
    let mut buf = [0u8; 32];
    hex_into(&mut buf[..16], &prefix.to_be_bytes());
    hex_into(&mut buf[16..], &n.to_be_bytes());
    super::headers::shared_value(buf)
}

/// The client's ID if it is 1–128 characters of `[A-Za-z0-9._:/+=-]`, else a new one.
pub fn from_client(value: Option<&HeaderValue>) -> HeaderValue {
    match value {
        Some(v)
            if (1..=128).contains(&v.len())
                && v.as_bytes()
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"._:/+=-".contains(b)) =>
        {
            v.clone()
        }
        _ => generate(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_validated() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        let ok = HeaderValue::from_static("abc-123");
        assert_eq!(from_client(Some(&ok)), ok);
        let bad = HeaderValue::from_static("has space");
        assert_ne!(from_client(Some(&bad)), bad);
        let long = HeaderValue::from_str(&"a".repeat(200)).expect("value");
        assert_eq!(from_client(Some(&long)).len(), 32);
    }
}
