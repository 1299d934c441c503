//! Consistent hashing on a ketama ring: each target owns many points on a
//! 64-bit circle (160 per unit of weight); a request goes to the owner of
//! the first point at or after its key's hash. Adding or removing a target
//! moves only the keys of the points it gains or loses, about 1/N of them.

use std::borrow::Cow;
use std::net::IpAddr;

use http::header::{HeaderMap, HeaderName, COOKIE};

use crate::routing::conditions::query_values;

const POINTS_PER_WEIGHT: u64 = 160;
const MAX_POINTS: u64 = 1 << 20;

/// A 64-bit hash with good spread (FNV-1a, then a MurmurHash3 finalizer).
/// Stable across processes, so every gateway node maps a key the same way.
pub fn hash64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The ring: sorted points and the target index owning each.
#[derive(Debug)]
pub struct Ring {
    points: Vec<(u64, u32)>,
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl Ring {
    /// Builds the ring. Points depend only on each target's address and
    /// weight, so a target keeps its points when others come or go.
    pub fn new(weights: &[u32], addresses: &[&str]) -> Ring {
        let g = weights
            .iter()
            .map(|&w| u64::from(w))
            .filter(|&w| w > 0)
            .fold(0, gcd)
            .max(1);
        let units: u64 = weights.iter().map(|&w| u64::from(w) / g).sum();
        // Fewer points per unit when weights are huge, to bound the ring's size.
        let per_unit = MAX_POINTS
            .checked_div(units)
            .map_or(0, |cap| POINTS_PER_WEIGHT.min(cap.max(1)));
        let mut points = Vec::new();
        for (i, (&w, addr)) in weights.iter().zip(addresses).enumerate() {
            for j in 0..(u64::from(w) / g) * per_unit {
                points.push((hash64(format!("{addr}#{j}").as_bytes()), i as u32));
            }
        }
        points.sort_unstable();
        Ring { points }
    }

    /// The target owning `key`; when it is unavailable, the next available
    /// owner clockwise (so its keys spread over the rest and come back when
    /// it does). `None` when no target is available.
    pub fn pick(&self, key: &[u8], avail: impl Fn(usize) -> bool) -> Option<usize> {
        let n = self.points.len();
        if n == 0 {
            return None;
        }
        let h = hash64(key);
        let at = self.points.partition_point(|&(p, _)| p < h);
        (0..n)
            .map(|k| self.points[(at + k) % n].1 as usize)
            .find(|&t| avail(t))
    }
}

/// What a request is hashed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// The client's IP address.
    ClientIp,
    /// A request header's value.
    Header(HeaderName),
    /// A cookie's value.
    Cookie(String),
    /// A query parameter's (decoded) value.
    Query(String),
    /// A path capture of the matched route.
    Capture(String),
}

/// The request facts a hash key may come from.
pub struct KeySource<'a> {
    /// The client's IP.
    pub client_ip: IpAddr,
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// Raw query string.
    pub query: Option<&'a str>,
    /// Looks up a path capture of the matched route.
    pub capture: &'a dyn Fn(&str) -> Option<String>,
}

impl HashKey {
    /// Parses `client_ip`, `header:NAME`, `cookie:NAME`, `query:NAME` or `capture:NAME`.
    pub fn parse(s: &str) -> Result<HashKey, String> {
        let hint =
            "write `client_ip`, `header:NAME`, `cookie:NAME`, `query:NAME` or `capture:NAME`";
        if s == "client_ip" {
            return Ok(HashKey::ClientIp);
        }
        let (kind, name) = s
            .split_once(':')
            .ok_or_else(|| format!("unknown hash key `{s}`; {hint}"))?;
        if name.is_empty() {
            return Err(format!("hash key `{s}` names nothing; {hint}"));
        }
        Ok(match kind {
            "header" => HashKey::Header(
                HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("`{name}` is not a valid header name"))?,
            ),
            "cookie" => HashKey::Cookie(name.to_string()),
            "query" => HashKey::Query(name.to_string()),
            "capture" => HashKey::Capture(name.to_string()),
            _ => return Err(format!("unknown hash key source `{kind}`; {hint}")),
        })
    }

    /// The key's bytes for this request. When the request lacks the header,
    /// cookie, parameter or capture, the client IP is used instead, so such
    /// requests still spread and stay sticky per client.
    pub fn extract<'a>(&self, src: &KeySource<'a>) -> Cow<'a, [u8]> {
        let found: Option<Cow<'a, [u8]>> = match self {
            HashKey::ClientIp => None,
            HashKey::Header(h) => src.headers.get(h).map(|v| Cow::Borrowed(v.as_bytes())),
            HashKey::Cookie(name) => src
                .headers
                .get_all(COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(k, _)| k == name)
                .map(|(_, v)| Cow::Owned(v.as_bytes().to_vec())),
            HashKey::Query(name) => query_values(src.query.unwrap_or(""), name)
                .next()
                .map(|v| Cow::Owned(v.into_bytes())),
            HashKey::Capture(name) => (src.capture)(name).map(|v| Cow::Owned(v.into_bytes())),
        };
        found.unwrap_or_else(|| Cow::Owned(src.client_ip.to_string().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:80")).collect()
    }

    #[test]
    fn removing_a_target_moves_only_its_keys() {
        let a = addrs(10);
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        let before = Ring::new(&[1; 10], &refs);
        // Remove target 3 by draining it (weight 0 keeps indices stable).
        let mut w = [1u32; 10];
        w[3] = 0;
        let after = Ring::new(&w, &refs);
        let keys = 20_000;
        let mut moved = 0;
        for k in 0..keys {
            let key = format!("user-{k}");
            let (x, y) = (
                before.pick(key.as_bytes(), |_| true),
                after.pick(key.as_bytes(), |_| true),
            );
            if x != y {
                moved += 1;
                assert_eq!(x, Some(3), "only keys of the removed target move");
            }
        }
        let fraction = moved as f64 / keys as f64;
        assert!((0.05..0.15).contains(&fraction), "moved {fraction}");
    }

    #[test]
    fn spread_follows_weights() {
        let a = addrs(3);
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        let ring = Ring::new(&[1, 1, 2], &refs);
        let mut counts = [0usize; 3];
        for k in 0..40_000 {
            counts[ring
                .pick(format!("k{k}").as_bytes(), |_| true)
                .expect("target")] += 1;
        }
        let share = counts[2] as f64 / 40_000.0;
        assert!((share - 0.5).abs() < 0.06, "{counts:?}");
        assert!(Ring::new(&[0, 0], &refs[..2])
            .pick(b"x", |_| true)
            .is_none());
        // An unavailable owner's keys go to the next owner; the others stay put.
        let owner = ring.pick(b"some-key", |_| true).expect("target");
        let fallback = ring.pick(b"some-key", |t| t != owner).expect("target");
        assert_ne!(owner, fallback);
    }

    #[test]
    fn keys_parse_and_fall_back_to_the_client_ip() {
        assert_eq!(HashKey::parse("client_ip"), Ok(HashKey::ClientIp));
        for bad in ["ip", "header:", "header:bad name", "body:x", "cookie"] {
            assert!(HashKey::parse(bad).is_err(), "{bad}");
        }
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, "a=1; session=abc".parse().expect("value"));
        let src = KeySource {
            client_ip: "192.0.2.7".parse().expect("ip"),
            headers: &headers,
            query: Some("tenant=t1"),
            capture: &|n| (n == "id").then(|| "42".to_string()),
        };
        let get = |k: &str| HashKey::parse(k).expect("key").extract(&src).into_owned();
        assert_eq!(get("cookie:session"), b"abc");
        assert_eq!(get("query:tenant"), b"t1");
        assert_eq!(get("capture:id"), b"42");
        assert_eq!(
            get("header:x-user"),
            b"192.0.2.7",
            "absent: falls back to the client IP"
        );
    }
}
