//! Loader tests: errors are collected, positioned and explained.

use super::*;

fn load(src: &str) -> Result<LoadedConfig, ConfigErrors> {
    load_str(src, "test.yaml", &|k| {
        (k == "PORT").then(|| "9000".to_string())
    })
}

fn errors(src: &str) -> Vec<String> {
    load(src)
        .expect_err("should be invalid")
        .errors
        .iter()
        .map(|e| e.to_string())
        .collect()
}

const BASE: &str = "listeners:\n  - { name: main, address: 127.0.0.1:0 }\n";

#[test]
fn quickstart_is_valid() {
    let loaded = load(crate::QUICKSTART).expect("quickstart validates");
    assert_eq!(loaded.doc.listeners.len(), 2);
}

#[test]
fn path_errors_carry_path_line_and_column() {
    let src = format!("{BASE}routes:\n  - name: a\n    match:\n      paths: [\"/ok\", \"nope\"]\n    respond: {{}}\n");
    let errs = errors(&src);
    assert_eq!(errs, vec!["routes[0].match.paths[1] (line 6, col 22): path must start with '/' (or '=/' for exact, '~' for a regex)"]);
}

#[test]
fn many_errors_are_reported_together() {
    let src = format!(
        "{BASE}upstreams:\n  - name: u\n    targets: [{{ address: 'noport' }}]\nroutes:\n  - name: a\n    upstream: missing\n  - name: a\n    respond: {{ status: 'x' }}\n  - name: c\n    match: {{ paths: ['~(' ] }}\n    respond: {{}}\n    bogus: 1\n  - name: d\n    match: {{ paths: ['~(' ] }}\n    respond: {{}}\n"
    );
    let errs = errors(&src);
    let text = errs.join("\n");
    assert!(text.contains("routes[1].respond.status"), "{text}");
    assert!(text.contains("unknown field `bogus`"), "{text}");
    // Every type error is reported at once; reference checks run once types are right.
    assert_eq!(errs.len(), 2, "{text}");
    let src2 = format!("{BASE}upstreams:\n  - name: u\n    targets: [{{ address: 'a:1' }}]\nroutes:\n  - name: a\n    upstream: missing\n  - name: a\n    respond: {{}}\n  - name: c\n    match: {{ paths: ['~(' ], headers: [{{ name: 'bad header', value: x }}] }}\n    respond: {{}}\n");
    let text = errors(&src2).join("\n");
    assert!(
        text.contains("routes[0].upstream (line 8, col 15): unknown upstream `missing`"),
        "{text}"
    );
    assert!(
        text.contains("routes[1].name (line 9, col 11): duplicate name `a`"),
        "{text}"
    );
    assert!(
        text.contains("routes[2].match.paths[0]") && text.contains("invalid regex"),
        "{text}"
    );
    assert!(text.contains("not a valid header name"), "{text}");
}

#[test]
fn wrong_types_unknown_keys_and_sections() {
    let text = errors("listeners: 5\nroutez: []\n").join("\n");
    assert!(text.contains("`listeners` must be a list"), "{text}");
    assert!(text.contains("unknown section `routez`"), "{text}");
    let text = errors(&format!(
        "{BASE}routes:\n  - name: r\n    priority: high\n    respond: {{}}\n"
    ))
    .join("\n");
    assert!(
        text.contains("routes[0].priority (line 5, col 15): invalid type"),
        "{text}"
    );
    let text = errors("listeners:\n  - { name: main, address: 127.0.0.1:0, typo: 1 }\n").join("\n");
    assert!(
        text.contains("listeners[0]") && text.contains("unknown field `typo`"),
        "{text}"
    );
}

#[test]
fn listeners_overlap_and_bad_addresses() {
    let text = errors(
        "listeners:\n  - { name: a, address: 0.0.0.0:8080 }\n  - { name: b, address: 127.0.0.1:8080 }\n  - { name: c, address: 'localhost:80' }\n  - { name: a, address: 127.0.0.1:0 }\n  - { name: e, address: 127.0.0.1:0 }\n",
    )
    .join("\n");
    assert!(
        text.contains("listeners[1].address") && text.contains("overlaps listeners[0]"),
        "{text}"
    );
    assert!(
        text.contains("listeners[2].address") && text.contains("not IP:PORT"),
        "{text}"
    );
    assert!(
        text.contains("listeners[3].name") && text.contains("duplicate name `a`"),
        "{text}"
    );
    assert!(
        !text.contains("listeners[4]"),
        "port 0 never overlaps: {text}"
    );
    assert!(errors("routes: []\n")
        .join("")
        .contains("at least one listener"));
}

#[test]
fn env_substitution_in_documents() {
    let loaded =
        load("listeners:\n  - { name: m, address: '127.0.0.1:${PORT}' }\n").expect("valid");
    assert_eq!(loaded.doc.listeners[0].address, "127.0.0.1:9000");
    let text = errors("listeners:\n  - { name: m, address: '127.0.0.1:${NOPE}' }\n").join("");
    assert!(
        text.contains(
            "listeners[0].address (line 2, col 25): environment variable `NOPE` is not set"
        ),
        "{text}"
    );
}

#[test]
fn malformed_yaml_is_positioned() {
    let text = errors("listeners:\n  - name: [unclosed\n").join("");
    assert!(
        text.contains("malformed YAML") && text.contains("line"),
        "{text}"
    );
}

#[test]
fn actions_redirects_and_plugins_are_checked() {
    let text = errors(&format!(
        "{BASE}routes:\n  - name: none\n  - name: two\n    respond: {{}}\n    redirect: {{ location: /x }}\n  - name: red\n    match: {{ paths: ['/a/{{id}}'] }}\n    redirect: {{ status: 200, location: '/b/{{idd}}' }}\n  - name: p\n    respond: {{}}\n    plugins: [{{ key_auht: {{}} }}]\n  - name: s\n    respond: {{ status: 99 }}\n    strip_prefix: true\n"
    ))
    .join("\n");
    for needle in [
        "routes[0] (line 4, col 5): a route needs one action",
        "routes[1] (line 5, col 5): a route takes only one",
        "routes[2].redirect.status",
        "`{idd}` is not a capture",
        "routes[3].plugins[0].key_auht",
        "unknown plugin `key_auht`; known plugins: ip_restriction, cors, key_auth",
        "routes[4].respond.status",
        "routes[4].strip_prefix",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    let text = errors(&format!(
        "{BASE}routes:\n  - name: r\n    respond: {{}}\n    timeouts: {{ read: 1s }}\n    max_in_flight: 3\n    retry_non_idempotent: true\n    grpc_web: true\n  - name: web\n    upstream: plain\n    grpc_web: true\n  - name: web-split\n    split: {{ upstreams: [{{ upstream: h2, weight: 1 }}, {{ upstream: plain, weight: 1 }}] }}\n    grpc_web: true\nupstreams:\n  - {{ name: plain, targets: [{{ address: 127.0.0.1:1 }}] }}\n  - {{ name: h2, targets: [{{ address: 127.0.0.1:1 }}], http2: true }}\n"
    ))
    .join("\n");
    for needle in [
        "routes[0].timeouts (line 6, col 15): `timeouts` only applies to routes that proxy",
        "routes[0].max_in_flight",
        "routes[0].retry_non_idempotent",
        "routes[0].grpc_web",
        "routes[1].grpc_web (line 12, col 15): gRPC-Web is translated to gRPC, which needs HTTP/2: set `http2: true` on upstream `plain`",
        "routes[2].grpc_web (line 15, col 15): gRPC-Web is translated to gRPC, which needs HTTP/2: set `http2: true` on upstream `plain`",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

#[test]
fn durations_and_sizes_are_human() {
    let text = errors("listeners:\n  - { name: m, address: 127.0.0.1:0, max_body_size: 10parsecs, header_read_timeout: 5 }\n").join("\n");
    assert!(text.contains("unknown size unit"), "{text}");
    let ok = load("listeners:\n  - { name: m, address: 127.0.0.1:0, max_body_size: 1MiB, header_read_timeout: 250ms }\n").expect("valid");
    assert_eq!(ok.doc.listeners[0].max_body_size.0, 1 << 20);
}

#[test]
fn load_balancing_settings_are_checked() {
    let up = |lb: &str| {
        format!("{BASE}upstreams:\n  - name: u\n    targets: [{{ address: 'a:1' }}, {{ address: 'b:1' }}]\n    load_balancing: {lb}\nroutes:\n  - name: r\n    match: {{ paths: ['/users/{{id}}'] }}\n    upstream: u\n")
    };
    for ok in [
        "round_robin",
        "least_requests",
        "random_two",
        "ewma",
        "{ ewma: { decay: 5s } }",
        "{ consistent_hash: { key: 'header:x-user' } }",
        "{ consistent_hash: { key: 'capture:id' } }",
    ] {
        load(&up(ok)).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for (bad, needle) in [
        ("fastest", "unknown variant `fastest`"),
        (
            "{ ewma: { decay: 0s } }",
            "upstreams[0].load_balancing.ewma.decay",
        ),
        (
            "{ consistent_hash: { key: 'body:x' } }",
            "unknown hash key source `body`",
        ),
        ("{ consistent_hash: { key: 'header:' } }", "names nothing"),
        (
            "{ consistent_hash: { key: 'capture:user' } }",
            "routes[0].upstream",
        ),
        ("{ consistent_hash: {} }", "missing field `key`"),
    ] {
        let text = errors(&up(bad)).join("\n");
        assert!(text.contains(needle), "{bad}: {text}");
    }
    let text = errors(&format!(
        "{BASE}upstreams:\n  - name: u\n    targets: [{{ address: 'a:1', weight: -1 }}]\n"
    ))
    .join("");
    assert!(
        text.contains("upstreams[0].targets[0].weight") && text.contains("invalid value"),
        "{text}"
    );
}

#[test]
fn resilience_settings_are_checked() {
    let up = |extra: &str| {
        format!("{BASE}upstreams:\n  - name: u\n    targets: [{{ address: 'a:1' }}]\n{extra}")
    };
    load(&up("    retries: { attempts: 3, on: [connect_failure, error, timeout, 503] }\n    circuit_breaker: {}\n")).expect("valid");
    for (extra, needle) in [
        (
            "    retries: { attempts: 11 }\n",
            "upstreams[0].retries.attempts",
        ),
        (
            "    retries: { on: [sometimes] }\n",
            "unknown variant `sometimes`, expected one of `connect_failure`, `error`, `timeout`",
        ),
        ("    retries: { on: [200] }\n", "must be 4xx or 5xx"),
        (
            "    retries: { budget_percent: 101 }\n",
            "upstreams[0].retries.budget_percent",
        ),
        (
            "    retries: { backoff: 1s, max_backoff: 10ms }\n",
            "must not be shorter than `backoff`",
        ),
        (
            "    passive_health: { max_ejected_percent: 120 }\n",
            "max_ejected_percent",
        ),
        (
            "    passive_health: { ejection: 0s }\n",
            "must be greater than zero while ejection is on",
        ),
        (
            "    passive_health: { failure_statuses: [700] }\n",
            "not an HTTP status",
        ),
        (
            "    passive_health: { half_open_requests: 0 }\n",
            "half_open_requests",
        ),
        (
            "    circuit_breaker: { failure_percent: 0 }\n",
            "circuit_breaker.failure_percent",
        ),
        (
            "    circuit_breaker: { open_for: 0s }\n",
            "circuit_breaker.open_for",
        ),
        ("    max_in_flight: -1\n", "upstreams[0].max_in_flight"),
    ] {
        let text = errors(&up(extra)).join("\n");
        assert!(text.contains(needle), "{extra}: {text}");
    }
}

#[test]
fn the_admin_listener_defaults_to_loopback_and_checks_its_credentials() {
    let base = "listeners:\n  - { name: main, address: 127.0.0.1:8080 }\n";
    let ok = load(&format!("{base}admin: {{ max_body_size: 2kb }}\n")).expect("valid");
    assert_eq!(ok.doc.admin.expect("admin").address, "127.0.0.1:9901");
    let errs = errors(&format!(
        "{base}admin:\n  tokens:\n    - {{ name: a, role: read_write }}\n    - {{ name: a, role: read_only, sha256: abc }}\n"
    ));
    assert!(
        errs.iter()
            .any(|e| e.contains("admin.tokens[0]") && e.contains("exactly one")),
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.contains("admin.tokens[1].name") && e.contains("duplicate")),
        "{errs:?}"
    );
    assert!(
        errs.iter().any(|e| e.contains("admin.tokens[1].sha256")),
        "{errs:?}"
    );
    let errs = errors(&format!(
        "{base}admin:\n  tokens: [{{ name: a, role: admin, env: T }}]\n"
    ));
    assert!(
        errs.iter()
            .any(|e| e.contains("admin.tokens[0].role") && e.contains("read_write")),
        "{errs:?}"
    );
    let errs = errors(&format!(
        "{base}cluster:\n  etcd: {{ endpoints: [], prefix: nope/ }}\n  encryption_key: short\n"
    ));
    for path in [
        "cluster.etcd.endpoints",
        "cluster.etcd.prefix",
        "cluster.encryption_key",
    ] {
        assert!(errs.iter().any(|e| e.contains(path)), "{path}: {errs:?}");
    }
}
