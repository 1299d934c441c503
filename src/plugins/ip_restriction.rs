//! `ip_restriction`: allow or deny client addresses by CIDR (IPv4 and IPv6).
//! The client address is the trusted one: the peer, or behind configured
//! `trusted_proxies` the address they report. Deny wins over allow.

use std::net::IpAddr;
use std::sync::Arc;

use http::StatusCode;
use ipnet::IpNet;
use serde::Deserialize;

use super::context::Access;
use super::{BuildContext, BuildError, Phase, Plugin, Step};
use crate::proxy::errors::GatewayError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Addresses or CIDRs allowed; when given, everyone else is refused.
    #[serde(default)]
    allow: Vec<String>,
    /// Addresses or CIDRs refused.
    #[serde(default)]
    deny: Vec<String>,
    /// Status for refused clients (default 403).
    #[serde(default = "default_status")]
    status: u16,
    /// Message for refused clients.
    #[serde(default = "default_message")]
    message: String,
}

fn default_status() -> u16 {
    403
}

fn default_message() -> String {
    "your address is not allowed to use this route".into()
}

/// The compiled plugin.
#[derive(Debug)]
pub struct IpRestriction {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    status: StatusCode,
    message: String,
}

fn nets(list: &[String], field: &str) -> Result<Vec<IpNet>, BuildError> {
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            crate::config::validate::parse_cidr(s).ok_or_else(|| {
                (
                    format!("{field}[{i}]"),
                    format!(
                        "`{s}` is not an IP address or CIDR, like `10.0.0.0/8` or `2001:db8::/32`"
                    ),
                )
            })
        })
        .collect()
}

/// Builds `ip_restriction` from its configuration.
pub fn build(
    v: &serde_json::Value,
    _cx: &mut BuildContext<'_>,
) -> Result<Arc<dyn Plugin>, BuildError> {
    let c: Config = super::parse(v)?;
    if c.allow.is_empty() && c.deny.is_empty() {
        return Err((
            String::new(),
            "give `allow` or `deny` (lists of CIDRs)".into(),
        ));
    }
    let status = StatusCode::from_u16(c.status)
        .ok()
        .filter(|s| s.is_client_error())
        .ok_or_else(|| ("status".to_string(), "must be a 4xx status".to_string()))?;
    Ok(Arc::new(IpRestriction {
        allow: nets(&c.allow, "allow")?,
        deny: nets(&c.deny, "deny")?,
        status,
        message: c.message,
    }))
}

impl IpRestriction {
    /// Whether `ip` may pass.
    pub fn admits(&self, ip: IpAddr) -> bool {
        // An IPv4-mapped IPv6 peer (dual-stack socket) is its IPv4 address.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if self.deny.iter().any(|n| n.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip))
    }
}

impl Plugin for IpRestriction {
    fn name(&self) -> &'static str {
        "ip_restriction"
    }

    fn phase(&self) -> Phase {
        Phase::IpRules
    }

    fn access<'a>(&'a self, cx: &'a mut Access<'_>) -> Step<'a> {
        if self.admits(cx.client_ip()) {
            Step::Continue
        } else {
            Step::Reject(GatewayError::new(
                self.status,
                "address_not_allowed",
                self.message.clone(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(allow: &[&str], deny: &[&str]) -> IpRestriction {
        IpRestriction {
            allow: allow.iter().map(|s| s.parse().expect("cidr")).collect(),
            deny: deny.iter().map(|s| s.parse().expect("cidr")).collect(),
            status: StatusCode::FORBIDDEN,
            message: String::new(),
        }
    }

    #[test]
    fn deny_wins_and_mapped_addresses_count_as_ipv4() {
        let p = plugin(&["10.0.0.0/8", "2001:db8::/32"], &["10.9.0.0/16"]);
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert!(p.admits(ip("10.1.2.3")));
        assert!(!p.admits(ip("10.9.2.3")));
        assert!(!p.admits(ip("192.168.1.1")));
        assert!(p.admits(ip("2001:db8::5")));
        assert!(p.admits(ip("::ffff:10.1.2.3")));
        assert!(!p.admits(ip("::ffff:10.9.2.3")));
        let deny_only = plugin(&[], &["192.0.2.0/24"]);
        assert!(deny_only.admits(ip("198.51.100.1")));
        assert!(!deny_only.admits(ip("192.0.2.7")));
    }
}
