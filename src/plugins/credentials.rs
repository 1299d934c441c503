//! Credential helpers shared by the authentication plugins: hashing and
//! constant-time comparison, password hashes (bcrypt, argon2), reading a
//! single credential from a header or the query string, and removing it
//! before the request goes upstream.

use http::header::{HeaderMap, HeaderName};
use http::uri::{PathAndQuery, Uri};

/// Why a credential could not be read from a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// The credential appears more than once.
    Duplicated,
    /// The credential is present but empty.
    Empty,
    /// The credential is not valid text.
    NotText,
}

impl Malformed {
    /// A message for the client.
    pub fn message(self, what: &str) -> String {
        match self {
            Malformed::Duplicated => format!("{what} was sent more than once"),
            Malformed::Empty => format!("{what} is empty"),
            Malformed::NotText => format!("{what} is not valid text"),
        }
    }
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Compares two byte strings in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Parses 64 hex digits.
pub fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in hex.as_bytes().chunks(2).enumerate() {
        let s = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// The single value of header `name`: `Ok(None)` when absent.
pub fn single_header<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'h str>, Malformed> {
    let mut all = headers.get_all(name).iter();
    let Some(first) = all.next() else {
        return Ok(None);
    };
    if all.next().is_some() {
        return Err(Malformed::Duplicated);
    }
    let v = first.to_str().map_err(|_| Malformed::NotText)?.trim();
    if v.is_empty() {
        return Err(Malformed::Empty);
    }
    Ok(Some(v))
}

/// The single value of query parameter `name` (percent-decoded): `Ok(None)`
/// when absent.
pub fn single_query(query: Option<&str>, name: &str) -> Result<Option<String>, Malformed> {
    let Some(q) = query else { return Ok(None) };
    let mut found = None;
    for pair in q.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if decode(k).as_deref() != Some(name) {
            continue;
        }
        if found.is_some() {
            return Err(Malformed::Duplicated);
        }
        let v = decode(v).ok_or(Malformed::NotText)?;
        if v.is_empty() {
            return Err(Malformed::Empty);
        }
        found = Some(v);
    }
    Ok(found)
}

/// Percent-decodes a query component (`+` is a space).
pub fn decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Removes query parameter `name` from the request target.
pub fn remove_query_param(uri: &mut Uri, name: &str) {
    let Some(q) = uri.query() else { return };
    let kept: Vec<&str> = q
        .split('&')
        .filter(|pair| {
            let k = pair.split_once('=').map_or(*pair, |(k, _)| k);
            decode(k).as_deref() != Some(name)
        })
        .collect();
    let pq = if kept.is_empty() {
        uri.path().to_string()
    } else {
        format!("{}?{}", uri.path(), kept.join("&"))
    };
    let mut parts = uri.clone().into_parts();
    if let Ok(pq) = PathAndQuery::try_from(pq) {
        parts.path_and_query = Some(pq);
        if let Ok(u) = Uri::from_parts(parts) {
            *uri = u;
        }
    }
}

/// The token of an `Authorization: <scheme> <token>` value, when the scheme
/// matches (case-insensitively).
pub fn with_scheme<'v>(value: &'v str, scheme: &str) -> Option<&'v str> {
    let (s, rest) = value.split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

/// A password hash from the configuration: bcrypt (`$2b$…`) or argon2
/// (`$argon2id$…`). Plain-text passwords are refused.
#[derive(Debug)]
pub enum PasswordHash {
    /// A bcrypt hash.
    Bcrypt(String),
    /// An argon2 PHC string.
    Argon2(String),
}

impl PasswordHash {
    /// Parses a configured hash.
    pub fn parse(s: &str) -> Result<PasswordHash, String> {
        const HINT: &str = "passwords must be given as bcrypt (`$2b$…`) or argon2 (`$argon2id$…`) \
                            hashes, never in plain text; make one with \
                            `portcullis hash-password` or `htpasswd -nbB user password`";
        if s.starts_with("$2a$") || s.starts_with("$2b$") || s.starts_with("$2y$") {
            s.parse::<bcrypt::HashParts>()
                .map_err(|e| format!("invalid bcrypt hash ({e}); {HINT}"))?;
            Ok(PasswordHash::Bcrypt(s.to_string()))
        } else if s.starts_with("$argon2") {
            argon2::password_hash::phc::PasswordHash::new(s)
                .map_err(|e| format!("invalid argon2 hash ({e}); {HINT}"))?;
            Ok(PasswordHash::Argon2(s.to_string()))
        } else {
            Err(HINT.to_string())
        }
    }

    /// Checks `password` against the hash. Slow on purpose (the hash's work
    /// factor); callers run it off the event loop.
    pub fn verify(&self, password: &str) -> bool {
        match self {
            PasswordHash::Bcrypt(h) => bcrypt::verify(password, h).unwrap_or(false),
            PasswordHash::Argon2(h) => {
                use argon2::password_hash::PasswordVerifier;
                argon2::password_hash::phc::PasswordHash::new(h).is_ok_and(|parsed| {
                    argon2::Argon2::default()
                        .verify_password(password.as_bytes(), &parsed)
                        .is_ok()
                })
            }
        }
    }
}

/// Makes a bcrypt hash of `password` (for `portcullis hash-password`).
pub fn hash_password(password: &str) -> Result<String, String> {
    bcrypt::hash(password, bcrypt::DEFAULT_COST).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_credentials_are_read_once_and_removed() {
        assert_eq!(
            single_query(Some("a=1&api_key=s%20x&b=2"), "api_key"),
            Ok(Some("s x".into()))
        );
        assert_eq!(single_query(Some("a=1"), "api_key"), Ok(None));
        assert_eq!(
            single_query(Some("api_key=1&api_key=2"), "api_key"),
            Err(Malformed::Duplicated)
        );
        assert_eq!(
            single_query(Some("api_key="), "api_key"),
            Err(Malformed::Empty)
        );
        let mut uri: Uri = "/p?a=1&api_key=x&b=2".parse().expect("uri");
        remove_query_param(&mut uri, "api_key");
        assert_eq!(uri, "/p?a=1&b=2");
        let mut uri: Uri = "/p?api_key=x".parse().expect("uri");
        remove_query_param(&mut uri, "api_key");
        assert_eq!(uri, "/p");
    }

    #[test]
    fn password_hashes_are_required_and_verified() {
        assert!(PasswordHash::parse("hunter22").is_err());
        assert!(PasswordHash::parse("$2b$04$notreallyahash").is_err());
        let h = bcrypt::hash("s3cret", 4).expect("hash");
        let parsed = PasswordHash::parse(&h).expect("bcrypt");
        assert!(parsed.verify("s3cret"));
        assert!(!parsed.verify("s3creT"));
        use argon2::password_hash::PasswordHasher;
        let a = argon2::Argon2::default()
            .hash_password(b"pa55")
            .expect("argon2")
            .to_string();
        let parsed = PasswordHash::parse(&a).expect("argon2 hash");
        assert!(parsed.verify("pa55"));
        assert!(!parsed.verify("pa56"));
    }

    #[test]
    fn constant_time_comparison_and_hex() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(parse_hex32(&"ab".repeat(32)).is_some());
        assert!(parse_hex32("zz").is_none());
    }
}
