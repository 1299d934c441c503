//! Human units in configuration: durations (`250ms`, `1m`) and sizes
//! (`8KiB`, `10MB`). Parsed once when the document is loaded.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A duration written with a unit, like `250ms`, `30s`, `1m` or `1h 30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration with a unit, like `250ms`, `30s` or `1m`")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<HumanDuration, E> {
                humantime::parse_duration(s.trim())
                    .map(HumanDuration)
                    .map_err(|e| {
                        E::custom(format!(
                            "invalid duration `{s}`: {e}; write it like `250ms`, `30s` or `1m`"
                        ))
                    })
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<HumanDuration, E> {
                if n == 0 {
                    return Ok(HumanDuration(Duration::ZERO));
                }
                Err(E::custom(format!(
                    "duration `{n}` has no unit; write `{n}s` or `{n}ms`"
                )))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<HumanDuration, E> {
                Err(E::custom(format!(
                    "duration `{n}` has no unit; write it like `30s`"
                )))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<HumanDuration, E> {
                Err(E::custom(format!(
                    "duration `{n}` has no unit; write it like `1500ms`"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

/// A size in bytes, written as a number of bytes or with a unit:
/// `512`, `8KiB`, `10MB`, `1GiB` (SI units are powers of 1000, IEC of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

/// Parses a human size; the error says what was expected.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size `{s}`; write it like `512`, `8KiB` or `10MB`"))?;
    // Units are case-insensitive (`10mb` is `10MB`): sizes here are always bytes.
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1000,
        "kib" => 1 << 10,
        "mb" | "m" => 1_000_000,
        "mib" => 1 << 20,
        "gb" | "g" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => {
            let other = unit.trim();
            return Err(format!(
                "unknown size unit `{other}` in `{s}`; use B, KB, KiB, MB, MiB, GB or GiB"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size `{s}` is too large"))
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size like `512`, `8KiB` or `10MB`")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ByteSize, E> {
                parse_size(s).map(ByteSize).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(n))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<ByteSize, E> {
                Err(E::custom(format!("size `{n}` must not be negative")))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dur(v: serde_json::Value) -> Result<Duration, String> {
        serde_json::from_value::<HumanDuration>(v)
            .map(|d| d.0)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn durations() {
        assert_eq!(dur("250ms".into()), Ok(Duration::from_millis(250)));
        assert_eq!(dur("1m".into()), Ok(Duration::from_secs(60)));
        assert_eq!(dur(0.into()), Ok(Duration::ZERO));
        assert!(dur(5.into()).unwrap_err().contains("no unit"));
        assert!(dur("fast".into()).unwrap_err().contains("invalid duration"));
        assert!(dur((-1).into()).is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("8KiB"), Ok(8192));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("1kb"), Ok(1000));
        assert_eq!(parse_size("2mib"), Ok(2 << 20));
        assert!(parse_size("10 parsecs").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
        assert!(serde_json::from_value::<ByteSize>((-5).into()).is_err());
    }
}
