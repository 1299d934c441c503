//! Tests of line formatting: escaping, bounds, numbers, addresses and the
//! default writer against the general loop.

use super::*;

#[test]
fn sensitive_query_values_are_redacted() {
    let names = vec!["api_key".to_string(), "token".to_string()];
    assert_eq!(
        redact("a=1&API_KEY=s3cret&token&b=2", &names),
        "a=1&API_KEY=REDACTED&token=REDACTED&b=2"
    );
}

#[test]
fn the_declared_fields_are_the_configurable_ones_in_order() {
    let names: Vec<&str> = FIELDS.iter().map(|(_, n)| *n).collect();
    assert_eq!(names, ACCESS_LOG_FIELDS);
    // Naming every field explicitly, in order, is the default format.
    let every: Vec<String> = ACCESS_LOG_FIELDS.iter().map(|n| n.to_string()).collect();
    assert!(Format::new(Some(&every), &[], &[]).all);
    assert!(!Format::new(Some(&every[1..]), &[], &[]).all);
}

#[test]
fn lines_of_escaped_text_fit_their_bound_and_follow_each_other() {
    let nasty = "\u{1}\"\\".repeat(300);
    let rid = HeaderValue::from_static("r");
    let ua = HeaderValue::from_bytes(&[0xff; 700]).expect("obs-text");
    let uri: Uri = "/a?b=c".parse().expect("uri");
    let route: Arc<str> = nasty.as_str().into();
    let e = Entry {
        time_unix_ns: 0,
        request_id: &rid,
        client_ip: "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
            .parse()
            .expect("ip"),
        listener: Some(&nasty),
        protocol: Version::HTTP_11,
        method: &Method::GET,
        host: None,
        uri: Some(&uri),
        route: Some(&route),
        upstream: Some(&nasty),
        upstream_target: None,
        status: 200,
        error: None,
        request_bytes: u64::MAX,
        response_bytes: u64::MAX,
        duration: Duration::MAX,
        upstream_duration: Some(Duration::MAX),
        gateway_duration: Duration::MAX,
        consumer: Some(&nasty),
        user_agent: Some(&ua),
        tls_version: Some("TLSv1.3"),
        trace_id: Some([0xff; 16]),
        span_id: Some([0xff; 8]),
        headers: &[],
        names_plain: false,
    };
    let format = Format::new(None, &[], &[]);
    assert!(format.all);
    let mut lines = Lines::default();
    for _ in 0..40 {
        format.write(&e, &mut lines, &mut TimeCache::default());
    }
    // The constant-key writer and the general loop agree byte for byte.
    let mut general = Format::new(None, &[], &[]);
    general.all = false;
    let mut other = Lines::default();
    general.write(&e, &mut other, &mut TimeCache::default());
    assert_eq!(
        other.as_bytes(),
        &lines.as_bytes()[..other.as_bytes().len()]
    );
    let text = std::str::from_utf8(lines.as_bytes()).expect("UTF-8");
    assert_eq!(text.lines().count(), 40);
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("JSON");
        assert_eq!(v["route"], nasty.as_str());
        assert_eq!(
            v["user_agent"].as_str().map(|s| s.chars().count()),
            Some(700)
        );
    }
}

#[test]
fn addresses_are_written_as_std_formats_them() {
    for ip in [
        "0.9.10.100",
        "255.255.255.255",
        "1.20.199.0",
        "::1",
        "2001:db8::ff00:42:8329",
    ] {
        let ip: IpAddr = ip.parse().expect("ip");
        let mut lines = Lines::default();
        let mut out = lines.line(64);
        push_ip(&mut out, ip);
        let n = out.at;
        assert_eq!(&lines.buf[..n], format!("\"{ip}\"").as_bytes());
    }
}

#[test]
fn escaping_is_detected_at_every_position() {
    for len in 0..20 {
        let plain = "a".repeat(len);
        assert!(!needs_escape(plain.as_bytes()));
        assert!(!needs_escape("é€ü~\x7f".repeat(len).as_bytes()));
        assert!(special(format!("{plain}é").as_bytes(), true));
        assert!(!special(format!("{plain}\x7f").as_bytes(), true));
        for i in 0..len {
            for bad in [b'"', b'\\', b'\n', 0u8, 0x1f] {
                let mut s = plain.clone().into_bytes();
                s[i] = bad;
                assert!(needs_escape(&s), "{s:?}");
            }
        }
    }
}

#[test]
fn numbers_durations_addresses_and_escapes_are_valid_json() {
    let rid = HeaderValue::from_static("abc");
    let ua = HeaderValue::from_bytes(b"caf\xe9 \"x\"").expect("obs-text is a valid value");
    let uri: Uri = "/p%22?token=t&x=1".parse().expect("uri");
    let headers = [None, Some(HeaderValue::from_static("acme"))];
    let route: Arc<str> = "r".into();
    let e = Entry {
        time_unix_ns: 1_700_000_000_123_456_789,
        request_id: &rid,
        client_ip: "10.0.0.255".parse().expect("ip"),
        listener: Some("main"),
        protocol: Version::HTTP_2,
        method: &Method::POST,
        host: None,
        uri: Some(&uri),
        route: Some(&route),
        upstream: None,
        upstream_target: Some("[::1]:80"),
        status: 502,
        error: Some("upstream_error"),
        request_bytes: 0,
        response_bytes: 18_446_744_073_709_551_615,
        duration: Duration::from_nanos(1_234_567_890),
        upstream_duration: Some(Duration::from_nanos(999_999)),
        gateway_duration: Duration::ZERO,
        consumer: None,
        user_agent: Some(&ua),
        tls_version: None,
        trace_id: Some([0xab; 16]),
        span_id: None,
        headers: &headers,
        names_plain: true,
    };
    let names = [
        HeaderName::from_static("x-a"),
        HeaderName::from_static("x-b"),
    ];
    let format = Format::new(None, &names, &["token".into()]);
    let mut lines = Lines::default();
    format.write(&e, &mut lines, &mut TimeCache::default());
    let out = lines.as_bytes().to_vec();
    assert_eq!(out.last(), Some(&b'\n'));
    let v: serde_json::Value = serde_json::from_slice(&out).expect("one JSON object");
    assert_eq!(v["time"], "2023-11-14T22:13:20.123Z");
    assert_eq!(v["client_ip"], "10.0.0.255");
    assert_eq!(v["protocol"], "HTTP/2.0");
    assert_eq!(v["path"], "/p%22");
    assert_eq!(v["query"], "token=REDACTED&x=1");
    assert_eq!(v["status"], 502);
    assert_eq!(v["response_bytes"], u64::MAX);
    assert_eq!(v["duration_ms"].to_string(), "1234.568");
    assert_eq!(v["upstream_ms"].as_f64(), Some(1.0));
    assert_eq!(v["gateway_ms"].as_f64(), Some(0.0));
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains(r#""upstream_ms":1.000,"gateway_ms":0.000,"#),
        "{text}"
    );
    assert_eq!(v["user_agent"], "caf\u{fffd} \"x\"");
    assert_eq!(v["trace_id"], "ab".repeat(16));
    assert_eq!(v["span_id"], serde_json::Value::Null);
    assert_eq!(v["header.x-a"], serde_json::Value::Null);
    assert_eq!(v["header.x-b"], "acme");

    let v6 = Entry {
        client_ip: "2001:db8::1".parse().expect("ip"),
        ..e
    };
    let picked = Format::new(Some(&["client_ip".into(), "status".into()]), &[], &[]);
    lines.clear();
    picked.write(&v6, &mut lines, &mut TimeCache::default());
    assert_eq!(
        lines.as_bytes(),
        b"{\"client_ip\":\"2001:db8::1\",\"status\":502}\n"
    );
}

#[test]
fn milliseconds_round_to_the_microsecond_across_the_one_digit_path() {
    let ms = |d: Duration| {
        let mut lines = Lines::default();
        let mut out = lines.line(32);
        push_ms(&mut out, d);
        let n = out.at;
        String::from_utf8(lines.buf[..n].to_vec()).expect("ASCII")
    };
    assert_eq!(ms(Duration::ZERO), "0.000");
    assert_eq!(ms(Duration::from_nanos(9_999_499)), "9.999");
    assert_eq!(ms(Duration::from_nanos(9_999_500)), "10.000");
    assert_eq!(ms(Duration::from_millis(10)), "10.000");
    assert_eq!(ms(Duration::from_micros(123_456_789)), "123456.789");
}
