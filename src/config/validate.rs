//! Whole-document checks that types alone cannot express: unique names,
//! references between sections, overlapping listeners, valid patterns,
//! regexes and header names. Every problem is collected, none stops the rest.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use http::header::{HeaderName, HeaderValue};

use super::error::ConfigError;
use super::model::*;
use super::yaml::Positions;
use crate::plugins;
use crate::proxy::template::Template;
use crate::routing::{HostPattern, PathPattern};
use crate::upstream::balancer::HashKey;

struct Checker<'a> {
    positions: &'a Positions,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    fn err(&mut self, path: &str, msg: impl Into<String>) {
        self.errors
            .push(ConfigError::at(path, self.positions.find(path), msg));
    }

    /// Reports names that are empty or repeat an earlier one in the same section.
    fn unique<'n>(&mut self, section: &str, names: impl Iterator<Item = &'n str>) {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, name) in names.enumerate() {
            let path = format!("{section}[{i}].name");
            if name.trim().is_empty() {
                self.err(&path, "name must not be empty");
            } else if let Some(first) = seen.insert(name, i) {
                self.err(
                    &path,
                    format!("duplicate name `{name}`: {section}[{first}] already uses it"),
                );
                seen.insert(name, first);
            }
        }
    }
}

/// Checks a deserialized document; returns every problem found.
pub fn validate(doc: &Document, positions: &Positions) -> Vec<ConfigError> {
    let mut c = Checker {
        positions,
        errors: Vec::new(),
    };
    check_gateway(&mut c, &doc.gateway);
    check_listeners(&mut c, &doc.listeners);
    c.unique(
        "certificates",
        doc.certificates.iter().map(|u| u.name.as_str()),
    );
    check_upstreams(&mut c, &doc.upstreams);
    check_routes(&mut c, doc);
    check_consumers(&mut c, &doc.consumers);
    let public: Vec<SocketAddr> = doc
        .listeners
        .iter()
        .filter_map(|l| l.address.parse().ok())
        .collect();
    super::observability::check(
        doc.admin.as_ref(),
        &doc.observability,
        &public,
        &mut |path, msg| c.err(path, msg),
    );
    if let Some(cl) = &doc.cluster {
        super::control::check_cluster(cl, &mut |path, msg| c.err(path, msg));
    }
    for (i, p) in doc.plugins.iter().enumerate() {
        plugins::check_doc(p, &format!("plugins[{i}]"), &mut |path, msg| {
            c.err(path, msg)
        });
    }
    c.errors
}

fn check_gateway(c: &mut Checker, g: &GatewaySettings) {
    if g.workers > 1024 {
        c.err(
            "gateway.workers",
            "at most 1024 workers; use 0 for one per core",
        );
    }
    if HeaderName::from_bytes(g.request_id_header.as_bytes()).is_err() {
        c.err("gateway.request_id_header", "not a valid header name");
    }
}

fn check_listeners(c: &mut Checker, listeners: &[ListenerDoc]) {
    if listeners.is_empty() {
        c.err(
            "listeners",
            "at least one listener is needed, like `- { name: public, address: 0.0.0.0:8080 }`",
        );
    }
    c.unique("listeners", listeners.iter().map(|l| l.name.as_str()));
    let mut bound: Vec<(usize, SocketAddr)> = Vec::new();
    for (i, l) in listeners.iter().enumerate() {
        let p = format!("listeners[{i}]");
        match l.address.parse::<SocketAddr>() {
            Err(_) => c.err(
                &format!("{p}.address"),
                format!(
                    "`{}` is not IP:PORT; write `0.0.0.0:8080`, `127.0.0.1:8080` or `[::]:8080`",
                    l.address
                ),
            ),
            Ok(addr) => {
                let clash = bound.iter().find(|(_, b)| {
                    addr.port() != 0
                        && b.port() == addr.port()
                        && (b.ip() == addr.ip()
                            || b.ip().is_unspecified()
                            || addr.ip().is_unspecified())
                });
                if let Some((j, b)) = clash {
                    c.err(
                        &format!("{p}.address"),
                        format!("`{addr}` overlaps listeners[{j}] (`{b}`); give each listener its own port or address"),
                    );
                }
                bound.push((i, addr));
            }
        }
        for (j, t) in l.trusted_proxies.iter().enumerate() {
            if parse_cidr(t).is_none() {
                c.err(
                    &format!("{p}.trusted_proxies[{j}]"),
                    format!("`{t}` is not an IP address or CIDR like `10.0.0.0/8`"),
                );
            }
        }
        if !(1024..=1 << 20).contains(&l.max_header_size.0) {
            c.err(
                &format!("{p}.max_header_size"),
                "must be between 1KiB and 1MiB",
            );
        }
        if !(1..=10_000).contains(&l.max_headers) {
            c.err(&format!("{p}.max_headers"), "must be between 1 and 10000");
        }
        if l.max_uri_length.0 < 16 {
            c.err(&format!("{p}.max_uri_length"), "must be at least 16 bytes");
        }
        if l.header_read_timeout.0.is_zero() {
            c.err(
                &format!("{p}.header_read_timeout"),
                "must be greater than zero",
            );
        }
        if let Some(port) = l.redirect_to_https {
            if port == 0 {
                c.err(
                    &format!("{p}.redirect_to_https"),
                    "must be the HTTPS port to redirect to, like 443",
                );
            }
            if l.tls.is_some() {
                c.err(
                    &format!("{p}.redirect_to_https"),
                    "a TLS listener is already HTTPS; set this on the plain-HTTP listener",
                );
            }
        }
        if l.body_read_timeout.0.is_zero() {
            c.err(
                &format!("{p}.body_read_timeout"),
                "must be greater than zero",
            );
        }
    }
}

/// Parses `10.0.0.0/8` or a bare address (a single host).
pub fn parse_cidr(s: &str) -> Option<ipnet::IpNet> {
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

/// Splits a target `host:port`; the error says what is wrong.
pub fn parse_target(s: &str) -> Result<(String, u16), String> {
    let hint =
        "write a target as `host:port`, like `10.0.0.5:9000`, `[::1]:9000` or `users.internal:80`";
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("`{s}` has no port; {hint}"))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("`{port}` is not a port (1-65535); {hint}"))?;
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
    };
    if !host_ok {
        return Err(format!("`{host}` is not a host name or IP address; {hint}"));
    }
    Ok((host.to_string(), port))
}

fn check_timeouts(c: &mut Checker, p: &str, t: &TimeoutsDoc) {
    for (name, v) in [("connect", t.connect), ("read", t.read), ("total", t.total)] {
        if v.is_some_and(|d| d.0.is_zero()) {
            c.err(
                &format!("{p}.timeouts.{name}"),
                "must be greater than zero (leave it out for the default)",
            );
        }
    }
}

fn check_upstreams(c: &mut Checker, upstreams: &[UpstreamDoc]) {
    c.unique("upstreams", upstreams.iter().map(|u| u.name.as_str()));
    for (i, u) in upstreams.iter().enumerate() {
        let p = format!("upstreams[{i}]");
        if u.targets.is_empty() {
            c.err(
                &format!("{p}.targets"),
                "an upstream needs at least one target, like `- address: 127.0.0.1:9000`",
            );
        }
        let mut seen = HashSet::new();
        for (j, t) in u.targets.iter().enumerate() {
            if let Err(e) = parse_target(&t.address) {
                c.err(&format!("{p}.targets[{j}].address"), e);
            } else if !seen.insert(t.address.as_str()) {
                c.err(
                    &format!("{p}.targets[{j}].address"),
                    format!("target `{}` is listed twice", t.address),
                );
            }
            if t.weight > 10_000 {
                c.err(
                    &format!("{p}.targets[{j}].weight"),
                    "weight must be between 0 and 10000",
                );
            }
        }
        if !u.targets.is_empty() && u.targets.iter().all(|t| t.weight == 0) {
            c.err(
                &format!("{p}.targets"),
                "every target has weight 0, so no request could be served; give at least one a weight",
            );
        }
        match &u.load_balancing {
            LoadBalancing::Ewma(e) if e.decay.0.is_zero() => {
                c.err(
                    &format!("{p}.load_balancing.ewma.decay"),
                    "must be greater than zero, like `10s`",
                );
            }
            LoadBalancing::ConsistentHash(h) => {
                if let Err(e) = HashKey::parse(&h.key) {
                    c.err(&format!("{p}.load_balancing.consistent_hash.key"), e);
                }
            }
            _ => {}
        }
        check_timeouts(c, &p, &u.timeouts);
        check_resilience(c, &p, u);
    }
}

fn check_health_check(c: &mut Checker, p: &str, hc: &HealthCheckDoc) {
    let p = format!("{p}.health_check");
    if !hc.path.starts_with('/') {
        c.err(
            &format!("{p}.path"),
            "the probe path must start with '/', like `/healthz`",
        );
    }
    if http::Method::from_bytes(hc.method.to_ascii_uppercase().as_bytes()).is_err()
        || hc.method.is_empty()
    {
        c.err(
            &format!("{p}.method"),
            format!("`{}` is not an HTTP method", hc.method),
        );
    }
    if hc.interval.0 < std::time::Duration::from_millis(10) {
        c.err(&format!("{p}.interval"), "must be at least 10ms");
    }
    if hc.timeout.0.is_zero() || hc.timeout.0 >= hc.interval.0 {
        c.err(
            &format!("{p}.timeout"),
            format!("must be greater than zero and shorter than `interval` ({:?}), or probes would overlap", hc.interval.0),
        );
    }
    for (name, v) in [
        ("healthy_threshold", hc.healthy_threshold),
        ("unhealthy_threshold", hc.unhealthy_threshold),
    ] {
        if v == 0 || v > 100 {
            c.err(&format!("{p}.{name}"), "must be between 1 and 100");
        }
    }
    for (j, s) in hc.statuses.iter().enumerate() {
        if !(100..=599).contains(s) {
            c.err(
                &format!("{p}.statuses[{j}]"),
                format!("`{s}` is not an HTTP status"),
            );
        }
    }
    if let Some(h) = &hc.host {
        if HeaderValue::from_str(h).is_err() {
            c.err(&format!("{p}.host"), "not a valid Host header value");
        }
    }
}

fn check_breaker(c: &mut Checker, p: &str, b: &CircuitBreakerDoc) {
    let p = format!("{p}.circuit_breaker");
    if !(1..=100).contains(&b.failure_percent) {
        c.err(&format!("{p}.failure_percent"), "must be between 1 and 100");
    }
    for (name, v) in [
        ("min_requests", b.min_requests),
        ("half_open_requests", b.half_open_requests),
    ] {
        if v == 0 {
            c.err(&format!("{p}.{name}"), "must be at least 1");
        }
    }
    for (name, d) in [("window", b.window), ("open_for", b.open_for)] {
        if d.0.is_zero() {
            c.err(&format!("{p}.{name}"), "must be greater than zero");
        }
    }
}

fn check_resilience(c: &mut Checker, p: &str, u: &UpstreamDoc) {
    if u.dns_refresh.0 < std::time::Duration::from_millis(10) {
        c.err(&format!("{p}.dns_refresh"), "must be at least 10ms");
    }
    if let Some(b) = &u.circuit_breaker {
        check_breaker(c, p, b);
    }
    if u.passive_health.consecutive_failures > 0 && u.passive_health.half_open_requests == 0 {
        c.err(
            &format!("{p}.passive_health.half_open_requests"),
            "must be at least 1",
        );
    }
    if let Some(hc) = &u.health_check {
        check_health_check(c, p, hc);
    }
    let ph = &u.passive_health;
    if ph.max_ejected_percent > 100 {
        c.err(
            &format!("{p}.passive_health.max_ejected_percent"),
            "must be between 0 and 100",
        );
    }
    if ph.consecutive_failures > 0 && ph.ejection.0.is_zero() {
        c.err(
            &format!("{p}.passive_health.ejection"),
            "must be greater than zero while ejection is on",
        );
    }
    if ph.max_ejection.0 < ph.ejection.0 {
        c.err(
            &format!("{p}.passive_health.max_ejection"),
            "must not be shorter than `ejection`",
        );
    }
    for (j, s) in ph.failure_statuses.iter().enumerate() {
        if !(100..=599).contains(s) {
            c.err(
                &format!("{p}.passive_health.failure_statuses[{j}]"),
                format!("`{s}` is not an HTTP status"),
            );
        }
    }
    let r = &u.retries;
    if r.attempts > 10 {
        c.err(
            &format!("{p}.retries.attempts"),
            "at most 10 extra attempts",
        );
    }
    if r.budget_percent > 100 {
        c.err(
            &format!("{p}.retries.budget_percent"),
            "must be between 0 and 100",
        );
    }
    if r.max_backoff.0 < r.backoff.0 {
        c.err(
            &format!("{p}.retries.max_backoff"),
            "must not be shorter than `backoff`",
        );
    }
    for (j, on) in r.on.iter().enumerate() {
        if let RetryOn::Status(s) = on {
            if !(400..=599).contains(s) {
                c.err(
                    &format!("{p}.retries.on[{j}]"),
                    format!("retry statuses must be 4xx or 5xx, not `{s}`"),
                );
            }
        }
    }
}

fn check_routes(c: &mut Checker, doc: &Document) {
    c.unique("routes", doc.routes.iter().map(|r| r.name.as_str()));
    let upstreams: HashSet<&str> = doc.upstreams.iter().map(|u| u.name.as_str()).collect();
    let listeners: HashSet<&str> = doc.listeners.iter().map(|l| l.name.as_str()).collect();
    for (i, r) in doc.routes.iter().enumerate() {
        let p = format!("routes[{i}]");
        let actions = [
            r.upstream.is_some(),
            r.split.is_some(),
            r.respond.is_some(),
            r.redirect.is_some(),
        ];
        match actions.iter().filter(|a| **a).count() {
            0 => c.err(
                &p,
                "a route needs one action: `upstream`, `split`, `respond` or `redirect`",
            ),
            1 => {}
            _ => c.err(
                &p,
                "a route takes only one of `upstream`, `split`, `respond` and `redirect`",
            ),
        }
        if let Some(u) = &r.upstream {
            if !upstreams.contains(u.as_str()) {
                c.err(
                    &format!("{p}.upstream"),
                    format!("unknown upstream `{u}`; define it under `upstreams`"),
                );
            }
        } else if r.strip_prefix && r.split.is_none() {
            c.err(
                &format!("{p}.strip_prefix"),
                "`strip_prefix` only applies to routes that proxy (`upstream` or `split`)",
            );
        }
        if let Some(split) = &r.split {
            check_split(c, &p, split, &upstreams);
        }
        if r.grpc_web {
            let split = r.split.iter().flat_map(|s| &s.upstreams);
            let names = r.upstream.iter().chain(split.map(|s| &s.upstream));
            for name in names {
                let plain = doc.upstreams.iter().find(|u| &u.name == name && !u.http2);
                if plain.is_some() {
                    c.err(
                        &format!("{p}.grpc_web"),
                        format!("gRPC-Web is translated to gRPC, which needs HTTP/2: set `http2: true` on upstream `{name}`"),
                    );
                }
            }
        }
        if r.upstream.is_none() && r.split.is_none() {
            // Options of the upstream phase would be silently ignored here.
            let proxy_only = [
                ("timeouts", r.timeouts != TimeoutsDoc::default()),
                ("max_in_flight", r.max_in_flight > 0),
                ("retry_non_idempotent", r.retry_non_idempotent),
                ("grpc_web", r.grpc_web),
            ];
            for (name, set) in proxy_only {
                if set {
                    c.err(
                        &format!("{p}.{name}"),
                        format!(
                            "`{name}` only applies to routes that proxy (`upstream` or `split`)"
                        ),
                    );
                }
            }
        }
        for (j, l) in r.listeners.iter().enumerate() {
            if !listeners.contains(l.as_str()) {
                c.err(
                    &format!("{p}.listeners[{j}]"),
                    format!("unknown listener `{l}`"),
                );
            }
        }
        let m = &r.matcher;
        for (j, h) in m.hosts.iter().enumerate() {
            if let Err(e) = HostPattern::parse(h) {
                c.err(&format!("{p}.match.hosts[{j}]"), e);
            }
        }
        let mut captures: Vec<String> = Vec::new();
        for (j, path) in m.paths.iter().enumerate() {
            match PathPattern::parse(path) {
                Ok(pat) => captures.extend(pat.capture_names()),
                Err(e) => c.err(&format!("{p}.match.paths[{j}]"), e),
            }
        }
        for (j, method) in m.methods.iter().enumerate() {
            if http::Method::from_bytes(method.to_ascii_uppercase().as_bytes()).is_err()
                || method.is_empty()
            {
                c.err(
                    &format!("{p}.match.methods[{j}]"),
                    format!("`{method}` is not an HTTP method"),
                );
            }
        }
        for (kind, fields) in [("headers", &m.headers), ("query", &m.query)] {
            for (j, f) in fields.iter().enumerate() {
                let fp = format!("{p}.match.{kind}[{j}]");
                if kind == "headers" && HeaderName::from_bytes(f.name.as_bytes()).is_err() {
                    c.err(
                        &format!("{fp}.name"),
                        format!("`{}` is not a valid header name", f.name),
                    );
                }
                if f.name.is_empty() {
                    c.err(&format!("{fp}.name"), "name must not be empty");
                }
                let tests = [f.value.is_some(), f.regex.is_some(), f.present.is_some()];
                if tests.iter().filter(|t| **t).count() != 1 {
                    c.err(&fp, "give exactly one of `value`, `regex` or `present`");
                }
                if let Some(re) = &f.regex {
                    if let Err(e) = regex::Regex::new(re) {
                        let msg = e
                            .to_string()
                            .split_whitespace()
                            .collect::<Vec<_>>()
                            .join(" ");
                        c.err(&format!("{fp}.regex"), format!("invalid regex: {msg}"));
                    }
                }
            }
        }
        // A hash on a path capture must name one this route's paths capture.
        let used = r.upstream.iter().map(String::as_str).chain(
            r.split
                .iter()
                .flat_map(|s| s.upstreams.iter().map(|t| t.upstream.as_str())),
        );
        for name in used {
            let Some(u) = doc.upstreams.iter().find(|u| u.name == name) else {
                continue;
            };
            if let LoadBalancing::ConsistentHash(h) = &u.load_balancing {
                if let Ok(HashKey::Capture(cap)) = HashKey::parse(&h.key) {
                    if !captures.contains(&cap) {
                        c.err(
                            &format!("{p}.{}", if r.upstream.is_some() { "upstream" } else { "split" }),
                            format!("upstream `{name}` hashes on the capture `{cap}`, but this route's paths capture no `{cap}`"),
                        );
                    }
                }
            }
        }
        if let Some(resp) = &r.respond {
            check_respond(c, &p, resp, &captures);
        }
        if let Some(red) = &r.redirect {
            if ![301, 302, 303, 307, 308].contains(&red.status) {
                c.err(
                    &format!("{p}.redirect.status"),
                    "redirect status must be 301, 302, 303, 307 or 308",
                );
            }
            if red.location.is_empty() {
                c.err(
                    &format!("{p}.redirect.location"),
                    "location must not be empty",
                );
            }
            if let Err(e) = Template::parse(&red.location, &captures, true) {
                c.err(&format!("{p}.redirect.location"), e);
            }
        }
        check_timeouts(c, &p, &r.timeouts);
        for (j, plugin) in r.plugins.iter().enumerate() {
            plugins::check_doc(plugin, &format!("{p}.plugins[{j}]"), &mut |path, msg| {
                c.err(path, msg)
            });
        }
    }
}

fn check_split(c: &mut Checker, p: &str, split: &SplitDoc, upstreams: &HashSet<&str>) {
    if split.upstreams.is_empty() {
        c.err(
            &format!("{p}.split.upstreams"),
            "a split needs at least one upstream",
        );
    } else if split.upstreams.iter().all(|s| s.weight == 0) {
        c.err(
            &format!("{p}.split.upstreams"),
            "every side of the split has weight 0; give at least one a weight",
        );
    }
    let mut seen = HashSet::new();
    for (j, s) in split.upstreams.iter().enumerate() {
        let sp = format!("{p}.split.upstreams[{j}]");
        if !upstreams.contains(s.upstream.as_str()) {
            c.err(
                &format!("{sp}.upstream"),
                format!(
                    "unknown upstream `{}`; define it under `upstreams`",
                    s.upstream
                ),
            );
        } else if !seen.insert(s.upstream.as_str()) {
            c.err(
                &format!("{sp}.upstream"),
                format!("`{}` appears twice in the split", s.upstream),
            );
        }
        if s.weight > 10_000 {
            c.err(
                &format!("{sp}.weight"),
                "weight must be between 0 and 10000",
            );
        }
    }
    if let Some(h) = &split.header {
        if HeaderName::from_bytes(h.as_bytes()).is_err() {
            c.err(
                &format!("{p}.split.header"),
                format!("`{h}` is not a valid header name"),
            );
        }
    }
    if let Some(name) = &split.cookie {
        // RFC 6265 cookie names are tokens: visible ASCII without separators.
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
        if !token {
            c.err(
                &format!("{p}.split.cookie"),
                format!("`{name}` is not a valid cookie name"),
            );
        }
    }
    if split.sticky && split.cookie.is_none() {
        c.err(
            &format!("{p}.split.sticky"),
            "`sticky` needs `cookie`: the cookie that remembers the choice",
        );
    }
}

fn check_respond(c: &mut Checker, p: &str, resp: &RespondDoc, captures: &[String]) {
    if !(200..=599).contains(&resp.status) {
        c.err(
            &format!("{p}.respond.status"),
            "status must be between 200 and 599",
        );
    }
    if resp.body.is_some() && resp.json.is_some() {
        c.err(
            &format!("{p}.respond"),
            "give either `body` or `json`, not both",
        );
    }
    if let Some(body) = &resp.body {
        if let Err(e) = Template::parse(body, captures, false) {
            c.err(&format!("{p}.respond.body"), e);
        }
    }
    for (name, value) in &resp.headers {
        let hp = format!("{p}.respond.headers.{name}");
        if HeaderName::from_bytes(name.as_bytes()).is_err() {
            c.err(&hp, format!("`{name}` is not a valid header name"));
        }
        if HeaderValue::from_str(value).is_err() {
            c.err(&hp, "header values must be visible ASCII text");
        }
    }
}

fn check_consumers(c: &mut Checker, consumers: &[ConsumerDoc]) {
    c.unique("consumers", consumers.iter().map(|u| u.name.as_str()));
    for (i, consumer) in consumers.iter().enumerate() {
        for (j, k) in consumer.credentials.api_keys.iter().enumerate() {
            if !k.starts_with("sha256:") && k.len() < 8 {
                c.err(
                    &format!("consumers[{i}].credentials.api_keys[{j}]"),
                    "API keys must be at least 8 characters",
                );
            }
        }
        for (j, p) in consumer.plugins.iter().enumerate() {
            plugins::check_doc(
                p,
                &format!("consumers[{i}].plugins[{j}]"),
                &mut |path, msg| c.err(path, msg),
            );
        }
    }
}
