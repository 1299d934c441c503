//! Tests of the etcd client: framing, and a real etcd.
use super::*;
use std::process::{Command, Stdio};
use watch::response_events;

fn frame_of(payload: &[u8]) -> Vec<u8> {
    [&[0][..], &(payload.len() as u32).to_be_bytes(), payload].concat()
}

#[test]
fn frames_are_encoded_and_reassembled_across_chunks() {
    let request = pb::RangeRequest { key: b"k".to_vec() };
    assert_eq!(&encode_frame(&request)[..], &[0, 0, 0, 0, 3, 0x0a, 1, b'k']);
    let wire = [frame_of(b"first"), frame_of(b""), frame_of(&[7; 300])].concat();
    let mut decoder = FrameDecoder::default();
    let mut got = Vec::new();
    for byte in &wire {
        decoder.push(&[*byte]);
        while let Some(message) = decoder.next_message().unwrap() {
            got.push(message);
        }
    }
    assert_eq!(got, [&b"first"[..], b"", &[7; 300]]);
    assert!(decoder.is_empty());
    decoder.push(&[frame_of(b"a"), frame_of(b"bc"), vec![0, 0]].concat());
    assert_eq!(decoder.next_message().unwrap().as_deref(), Some(&b"a"[..]));
    assert_eq!(decoder.next_message().unwrap().as_deref(), Some(&b"bc"[..]));
    assert_eq!(decoder.next_message().unwrap(), None);
    assert!(!decoder.is_empty());
}

#[test]
fn decoder_rejects_compressed_and_oversized_messages() {
    for (wire, why) in [
        ([1, 0, 0, 0, 1], "compressed"),
        ([0, 0xff, 0xff, 0xff, 0xff], "limit"),
    ] {
        let mut decoder = FrameDecoder::default();
        decoder.push(&wire);
        assert!(matches!(decoder.next_message(), Err(EtcdError::Protocol(m)) if m.contains(why)));
    }
}

#[test]
fn requests_use_the_official_field_numbers() {
    let txn = cas_request(b"k", b"v", 0);
    // result=1 (EQUAL, default), target=2 (MOD), key=3, mod_revision=6 sent even when 0.
    assert_eq!(
        txn.compare[0].encode_to_vec(),
        [0x10, 2, 0x1a, 1, b'k', 0x30, 0]
    );
    // RequestOp: request_put=2 { key=1, value=2 }, request_range=1 { key=1 }.
    assert_eq!(
        txn.success[0].encode_to_vec(),
        [0x12, 6, 0x0a, 1, b'k', 0x12, 1, b'v']
    );
    assert_eq!(txn.failure[0].encode_to_vec(), [0x0a, 3, 0x0a, 1, b'k']);
    let create = pb::WatchCreateRequest {
        key: b"k".to_vec(),
        start_revision: 5,
    };
    let watch = pb::WatchRequest {
        create_request: Some(create),
    };
    assert_eq!(watch.encode_to_vec(), [0x0a, 5, 0x0a, 1, b'k', 0x18, 5]);
}

#[test]
fn watch_responses_become_events_or_errors() {
    let event = |kind: pb::EventType, value: &[u8], mod_revision| pb::Event {
        r#type: kind as i32,
        kv: Some(pb::KeyValue {
            mod_revision,
            value: value.to_vec(),
        }),
    };
    let created = pb::WatchResponse {
        created: true,
        ..Default::default()
    };
    assert_eq!(response_events(created).unwrap(), []);
    let events = pb::WatchResponse {
        events: vec![
            event(pb::EventType::Put, b"v", 7),
            event(pb::EventType::Delete, b"", 8),
        ],
        ..Default::default()
    };
    let decoded = pb::WatchResponse::decode(&events.encode_to_vec()[..]).unwrap();
    let put = WatchEvent::Put(Stored {
        value: b"v".to_vec(),
        mod_revision: 7,
    });
    assert_eq!(
        response_events(decoded).unwrap(),
        [put, WatchEvent::Deleted { revision: 8 }]
    );
    let compacted = pb::WatchResponse {
        canceled: true,
        compact_revision: 4,
        ..Default::default()
    };
    assert!(matches!(
        response_events(compacted),
        Err(EtcdError::Compacted { revision: 4 })
    ));
    let canceled = pb::WatchResponse {
        canceled: true,
        cancel_reason: "gone".into(),
        ..Default::default()
    };
    assert!(
        matches!(response_events(canceled), Err(EtcdError::WatchCanceled { reason }) if reason == "gone")
    );
}

#[test]
fn grpc_status_is_read_and_its_message_decoded() {
    let mut headers = HeaderMap::new();
    assert!(grpc_status(&headers).is_none());
    headers.insert("grpc-status", "0".parse().unwrap());
    assert!(matches!(grpc_status(&headers), Some(Ok(()))));
    headers.insert("grpc-status", "14".parse().unwrap());
    headers.insert(
        "grpc-message",
        "etcdserver: no%20leader %E2%9C%93 100%".parse().unwrap(),
    );
    let Some(Err(err @ EtcdError::Status { code: 14, .. })) = grpc_status(&headers) else {
        panic!("expected status 14");
    };
    assert!(
        err.to_string().contains("etcdserver: no leader ✓ 100%;"),
        "{err}"
    );
}

#[test]
fn endpoints_are_validated() {
    let ok = parse_endpoint("http://127.0.0.1:2379", false).unwrap();
    assert_eq!(
        (ok.url.as_str(), ok.host.as_str(), ok.port, ok.tls),
        ("http://127.0.0.1:2379", "127.0.0.1", 2379, false)
    );
    let v6 = parse_endpoint("http://[::1]:2379/", false).unwrap();
    assert_eq!(
        (v6.url.as_str(), v6.host.as_str()),
        ("http://[::1]:2379", "::1")
    );
    let tls = parse_endpoint("https://etcd-1:2379", true).unwrap();
    assert_eq!(
        (tls.url.as_str(), tls.host.as_str(), tls.tls),
        ("https://etcd-1:2379", "etcd-1", true)
    );
    // Cleartext endpoints stay cleartext beside TLS ones.
    assert!(!parse_endpoint("http://etcd-2:2379", true).unwrap().tls);
    for (bad, why) in [
        ("https://etcd:2379", "TLS settings"),
        ("ftp://etcd:2379", "not http or https"),
        ("127.0.0.1:2379", "scheme"),
        ("http://etcd", "port"),
        ("http://etcd:2379/v3", "path"),
        ("http://u:p@etcd:2379", "credentials"),
        ("not a url", "not a URL"),
    ] {
        let err = parse_endpoint(bad, false).unwrap_err();
        assert!(err.to_string().contains(why), "{bad}: {err}");
    }
    assert!(EtcdClient::new(&[], Duration::from_secs(1), None, None).is_err());
}

/// A single-member etcd in a temporary directory, killed on drop.
struct EtcdProcess {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn start_etcd() -> Option<EtcdProcess> {
    let bin = std::env::var("ETCD_BIN").unwrap_or_else(|_| "/usr/bin/etcd".into());
    if !std::path::Path::new(&bin).exists() {
        eprintln!("SKIPPED: {bin} not found (apt-get install etcd-server, or set ETCD_BIN)");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{}", free_port());
    let peer = format!("http://127.0.0.1:{}", free_port());
    let child = Command::new(bin)
        .arg("--name=default")
        .arg(format!("--data-dir={}", dir.path().display()))
        .args([
            format!("--listen-client-urls={url}"),
            format!("--advertise-client-urls={url}"),
        ])
        .args([
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
        ])
        .arg(format!("--initial-cluster=default={peer}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Some(EtcdProcess {
        child,
        url,
        _dir: dir,
    })
}

/// Runs `etcdctl` (v3 API); false when it is missing or fails.
fn etcdctl(url: &str, args: &[&str]) -> bool {
    let mut command = Command::new("etcdctl");
    command
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={url}"))
        .args(args);
    matches!(command.stdout(Stdio::null()).status(), Ok(s) if s.success())
}

fn written(outcome: CasOutcome) -> i64 {
    match outcome {
        CasOutcome::Written { revision } => revision,
        other => panic!("expected a write, got {other:?}"),
    }
}

async fn next_event(watch: &mut Watch) -> Result<Option<WatchEvent>, EtcdError> {
    let next = tokio::time::timeout(Duration::from_secs(10), watch.next());
    next.await.expect("no watch event within 10 s")
}

fn put(value: &[u8], mod_revision: i64) -> Option<WatchEvent> {
    Some(WatchEvent::Put(Stored {
        value: value.to_vec(),
        mod_revision,
    }))
}

#[tokio::test]
async fn against_a_real_etcd() {
    let Some(mut etcd) = start_etcd() else { return };
    let timeout = Duration::from_secs(2);
    let client = EtcdClient::new(&[etcd.url.clone()], timeout, None, None).unwrap();
    let started = std::time::Instant::now();
    while let Err(e) = client.get(b"/probe").await {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "etcd did not start: {e}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let key = b"/portcullis/config";
    assert_eq!(client.get(b"/missing").await.unwrap(), None);
    let r1 = written(client.put_if(key, b"one", 0).await.unwrap());
    let one = Stored {
        value: b"one".to_vec(),
        mod_revision: r1,
    };
    assert_eq!(client.get(key).await.unwrap(), Some(one.clone()));
    let conflict = CasOutcome::Conflict { current: Some(one) };
    assert_eq!(client.put_if(key, b"two", 0).await.unwrap(), conflict);
    assert_eq!(client.put_if(key, b"two", r1 + 7).await.unwrap(), conflict);
    let r2 = written(client.put_if(key, b"two", r1).await.unwrap());
    assert!(r2 > r1);

    let mut watch = client.watch(key, r2 + 1).await.unwrap();
    let r3 = written(client.put_if(key, b"three", r2).await.unwrap());
    assert_eq!(next_event(&mut watch).await.unwrap(), put(b"three", r3));
    // A watch from an old revision replays the history.
    let mut history = client.watch(key, r1).await.unwrap();
    for (value, revision) in [(&b"one"[..], r1), (b"two", r2), (b"three", r3)] {
        assert_eq!(
            next_event(&mut history).await.unwrap(),
            put(value, revision)
        );
    }

    // A dead endpoint first: the next one answers, for calls and watches.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let both = EtcdClient::new(&[dead, etcd.url.clone()], timeout, None, None).unwrap();
    assert_eq!(
        both.get(key).await.unwrap().map(|s| s.mod_revision),
        Some(r3)
    );
    let mut via_both = both.watch(key, r3).await.unwrap();
    assert_eq!(next_event(&mut via_both).await.unwrap(), put(b"three", r3));
    // A frozen endpoint (accepts TCP, never answers): one call times
    // out, the following ones go to the next endpoint.
    let frozen = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let frozen_url = format!("http://{}", frozen.local_addr().unwrap());
    let short = Duration::from_millis(500);
    let failover = EtcdClient::new(&[frozen_url, etcd.url.clone()], short, None, None).unwrap();
    assert!(matches!(failover.get(key).await, Err(EtcdError::Timeout)));
    assert_eq!(
        failover.get(key).await.unwrap().map(|s| s.mod_revision),
        Some(r3)
    );

    if etcdctl(&etcd.url, &["del", "/portcullis/config"]) {
        let deleted = Some(WatchEvent::Deleted { revision: r3 + 1 });
        assert_eq!(next_event(&mut watch).await.unwrap(), deleted);
        assert!(etcdctl(&etcd.url, &["compaction", &(r3 + 1).to_string()]));
        let compacted = async { client.watch(key, r1).await?.next().await }.await;
        let expected =
            matches!(compacted, Err(EtcdError::Compacted { revision }) if revision == r3 + 1);
        assert!(expected, "{compacted:?}");
    } else {
        eprintln!("etcdctl not usable: delete and compaction not checked");
    }

    let _ = etcd.child.kill();
    let _ = etcd.child.wait();
    let started = std::time::Instant::now();
    let err = client.get(key).await.unwrap_err();
    assert!(matches!(err, EtcdError::Unreachable { .. }), "{err}");
    assert!(started.elapsed() <= timeout, "{:?}", started.elapsed());
    let lost = next_event(&mut watch).await;
    assert!(
        matches!(lost, Err(EtcdError::Unreachable { .. })),
        "{lost:?}"
    );
}
