//! Request path normalization, applied before routing so that a route and the
//! upstream see the same path: `%XX` escapes of unreserved characters are
//! decoded and `.`/`..` segments are removed (RFC 3986 §6.2.2), which closes
//! `/public/../admin`-style bypasses of path-based routes. Escapes of reserved
//! characters (like `%2F`) stay encoded.

use std::borrow::Cow;

/// Returns the normalized path; borrows when nothing changes (the common case).
pub fn normalize_path(path: &str) -> Cow<'_, str> {
    let needs_work = path.contains('%') || path.contains("/.") || !path.starts_with('/');
    if !needs_work {
        return Cow::Borrowed(path);
    }
    let decoded = decode_unreserved(path);
    let mut out: Vec<&str> = Vec::new();
    let body = decoded.strip_prefix('/').unwrap_or(&decoded);
    let mut trailing = false;
    for seg in body.split('/') {
        trailing = false;
        match seg {
            "." => trailing = true,
            ".." => {
                out.pop();
                trailing = true;
            }
            s => out.push(s),
        }
    }
    let mut s = String::with_capacity(decoded.len());
    for seg in &out {
        s.push('/');
        s.push_str(seg);
    }
    if trailing || s.is_empty() {
        s.push('/');
    }
    Cow::Owned(s)
}

fn decode_unreserved(path: &str) -> String {
    let b = path.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hv = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(c) = hv.filter(|c| c.is_ascii_alphanumeric() || b"-._~".contains(c)) {
                out.push(c);
                i += 3;
                continue;
            }
            // Keep the escape, normalized to uppercase hex.
            if hv.is_some() {
                out.push(b'%');
                out.extend_from_slice(path[i + 1..i + 3].to_ascii_uppercase().as_bytes());
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    // Only ASCII bytes were added or removed, so the input's UTF-8 stays intact.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::normalize_path;

    #[test]
    fn normalizes() {
        for (input, want) in [
            ("/a/b", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/public/../admin", "/admin"),
            ("/../../etc", "/etc"),
            ("/a/..", "/"),
            ("/a/.", "/a/"),
            ("/%61dmin", "/admin"),
            ("/a%2fb", "/a%2Fb"),
            ("/%2e%2e/x", "/x"),
            ("/caf%C3%A9", "/caf%C3%A9"),
            ("/x/café/%41", "/x/café/A"),
        ] {
            assert_eq!(normalize_path(input), want, "{input}");
        }
    }
}
