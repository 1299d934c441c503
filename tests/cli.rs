//! The `portcullis` binary: `validate`, `version`, and `run` with file
//! watching, SIGHUP reloads and SIGTERM draining.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::get;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

fn write(path: &std::path::Path, text: &str) {
    // Write then rename, like editors and config management tools do.
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).expect("create");
    f.write_all(text.as_bytes()).expect("write");
    f.sync_all().expect("sync");
    std::fs::rename(&tmp, path).expect("rename");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

#[test]
fn validate_reports_every_error_with_its_location() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.yaml");
    write(
        &path,
        "listeners:\n  - { name: main, address: 127.0.0.1:8080 }\nroutes:\n  - name: a\n    match:\n      paths: [\"users\"]\n    upstream: nowhere\n  - name: a\n    respond: {}\n",
    );
    let out = Command::new(BIN)
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("3 configuration errors"), "{err}");
    assert!(
        err.contains("routes[0].match.paths[0] (line 6, col 15): path must start with '/'"),
        "{err}"
    );
    assert!(
        err.contains("routes[0].upstream (line 7, col 15): unknown upstream `nowhere`"),
        "{err}"
    );
    assert!(
        err.contains("routes[1].name (line 8, col 11): duplicate name `a`"),
        "{err}"
    );

    let good = dir.path().join("good.yaml");
    write(&good, portcullis::QUICKSTART);
    let out = Command::new(BIN)
        .args(["validate", "-c"])
        .arg(&good)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ok (2 listeners, 1 upstreams, 7 routes)")
    );

    let out = Command::new(BIN)
        .args(["validate", "-c", "/nonexistent.yaml"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the configuration file"));

    let out = Command::new(BIN).arg("version").output().expect("runs");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("portcullis "));
}

#[test]
fn hash_password_prints_a_bcrypt_hash_the_config_accepts() {
    let mut child = Command::new(BIN)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"s3cret\n")
        .expect("write");
    let out = child.wait_with_output().expect("exits");
    assert!(out.status.success());
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(hash.starts_with("$2b$"), "{hash}");
    assert!(bcrypt::verify("s3cret", &hash).expect("verifies"));
    // Nothing to hash: a clear error.
    let out = Command::new(BIN)
        .arg("hash-password")
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty"));
}

struct Running(Child);

impl Running {
    /// Runs `portcullis run -c path`, logs discarded.
    fn spawn(path: &std::path::Path) -> Running {
        Running(
            Command::new(BIN)
                .args(["run", "-c"])
                .arg(path)
                .stderr(Stdio::null())
                .spawn()
                .expect("starts"),
        )
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(ok.success());
}

async fn wait_for_body(a: SocketAddr, want: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(s) = tokio::net::TcpStream::connect(a).await {
            drop(s);
            let got = get(a, "/").await;
            if got.body == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "still {:?}, wanted {want:?}",
                got.body
            );
        } else {
            assert!(Instant::now() < deadline, "gateway never listened on {a}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn doc(port: u16, body: &str, watch: &str) -> String {
    format!(
        "gateway: {{ workers: 1, watch_interval: {watch}, shutdown_grace: 5s }}\nlisteners:\n  - {{ name: main, address: 127.0.0.1:{port} }}\nroutes:\n  - name: r\n    respond: {{ body: '{body}' }}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_watches_the_file_and_reloads_on_sighup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gw.yaml");
    let port = free_port();
    let a: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    write(&path, &doc(port, "v1", "100ms"));
    let gw = Running::spawn(&path);
    wait_for_body(a, "v1", Duration::from_secs(10)).await;
    // An edit is picked up by the watcher.
    write(&path, &doc(port, "v2", "100ms"));
    wait_for_body(a, "v2", Duration::from_secs(5)).await;
    // A broken edit is rejected; v2 keeps serving.
    write(&path, "routes: [this is not valid");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(get(a, "/").await.body, "v2");
    // With watching off, SIGHUP forces the reload.
    write(&path, &doc(port, "v3", "0s"));
    wait_for_body(a, "v3", Duration::from_secs(5)).await;
    write(&path, &doc(port, "v4", "0s"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&gw.0, "-HUP");
    wait_for_body(a, "v4", Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests() {
    let slow = common::upstream_with(|_req| async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        http::Response::new(http_body_util::Full::new(bytes::Bytes::from_static(
            b"drained",
        )))
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gw.yaml");
    let port = free_port();
    let a: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    write(
        &path,
        &format!(
            "gateway: {{ workers: 1 }}\nlisteners:\n  - {{ name: main, address: 127.0.0.1:{port} }}\nupstreams:\n  - {{ name: s, targets: [{{ address: '{}' }}] }}\nroutes:\n  - {{ name: slow, match: {{ paths: ['/slow'] }}, upstream: s }}\n  - {{ name: r, respond: {{ body: up }} }}\n",
            slow.addr
        ),
    );
    let mut gw = Running::spawn(&path);
    wait_for_body(a, "up", Duration::from_secs(10)).await;
    let pending = tokio::spawn(async move { get(a, "/slow").await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    signal(&gw.0, "-TERM");
    let got = pending.await.expect("task");
    assert_eq!((got.status.as_u16(), got.body.as_str()), (200, "drained"));
    let status = tokio::task::spawn_blocking(move || gw.0.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(status.success(), "{status:?}");
}

#[test]
fn run_fails_clearly_when_a_listener_cannot_bind() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gw.yaml");
    write(&path, &doc(port, "x", "1s"));
    let out = Command::new(BIN)
        .args(["run", "-c"])
        .arg(&path)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("listener `main` cannot bind") && err.contains(&port.to_string()),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_stops_without_waiting_for_the_grace_period() {
    let hang = common::raw_upstream(common::Misbehave::Hang).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gw.yaml");
    let port = free_port();
    let a: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    write(
        &path,
        &format!(
            "gateway: {{ workers: 1, shutdown_grace: 30s }}\nlisteners:\n  - {{ name: main, address: 127.0.0.1:{port} }}\nupstreams:\n  - {{ name: h, targets: [{{ address: '{hang}' }}] }}\nroutes:\n  - {{ name: hang, match: {{ paths: ['/hang'] }}, upstream: h }}\n  - {{ name: r, respond: {{ body: up }} }}\n"
        ),
    );
    let mut gw = Running::spawn(&path);
    wait_for_body(a, "up", Duration::from_secs(10)).await;
    let _stuck = tokio::spawn(async move {
        common::client()
            .request(
                http::Request::get(format!("http://{a}/hang"))
                    .body(http_body_util::Full::default())
                    .expect("request"),
            )
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    signal(&gw.0, "-TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        gw.0.try_wait().expect("status").is_none(),
        "still draining after the first signal"
    );
    let t = Instant::now();
    signal(&gw.0, "-INT");
    let status = tokio::task::spawn_blocking(move || gw.0.wait())
        .await
        .expect("join")
        .expect("wait");
    assert_eq!(status.code(), Some(1));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[test]
fn validate_opens_no_log_file_and_starts_no_exporter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gw.yaml");
    let log = dir.path().join("access.log");
    write(
        &path,
        &format!(
            "{}observability:\n  access_log: {{ output: '{}' }}\n  tracing: {{ endpoint: 'http://127.0.0.1:1' }}\n",
            doc(free_port(), "ok", "1s"),
            log.display()
        ),
    );
    let out = Command::new(BIN)
        .args(["validate", "-c"])
        .arg(&path)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!log.exists(), "validate created the access log");
    // A tracing endpoint that cannot be used is still reported.
    write(
        &path,
        &format!(
            "{}observability:\n  tracing: {{ endpoint: 'https://127.0.0.1:1', ca: missing-ca.pem }}\n",
            doc(free_port(), "ok", "1s")
        ),
    );
    let out = Command::new(BIN)
        .args(["validate", "-c"])
        .arg(&path)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("observability.tracing") && err.contains("missing-ca.pem"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_reopens_the_access_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gw.yaml");
    let log = dir.path().join("access.log");
    let port = free_port();
    let a: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    write(
        &path,
        &format!(
            "{}observability:\n  access_log: {{ output: access.log, fields: [status] }}\n",
            doc(port, "v1", "1s")
        ),
    );
    let gw = Running::spawn(&path);
    wait_for_body(a, "v1", Duration::from_secs(10)).await;
    let lines = |p: &std::path::Path| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while lines(&log) < 1 {
        assert!(Instant::now() < deadline, "no access log line");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // logrotate: move the file away, then signal.
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).expect("rename");
    signal(&gw.0, "-USR1");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get(a, "/").await.body, "v1");
    let deadline = Instant::now() + Duration::from_secs(5);
    while lines(&log) < 1 {
        assert!(Instant::now() < deadline, "the access log was not reopened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(lines(&log), 1, "only the request after the signal");
    let before = lines(&rotated);
    assert!(before >= 1, "the first request went to the rotated file");
}

/// `config export`, `config diff FILE` and `config apply FILE` against a
/// running node: the file becomes the live configuration, a second apply
/// finds nothing to do, and bad credentials fail with a clear message.
#[test]
fn config_export_diff_and_apply_sync_a_file_with_a_running_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let live = dir.path().join("live.yaml");
    let sha: String = ring::digest::digest(&ring::digest::SHA256, b"sync-token-1")
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let base = format!(
        "listeners:\n  - {{ name: main, address: 127.0.0.1:0 }}\nadmin:\n  address: 127.0.0.1:0\n  tokens: [{{ name: git, role: read_write, sha256: {sha} }}]\nroutes:\n  - name: old\n    match: {{ paths: [/old] }}\n    respond: {{ status: 200, body: old }}\n"
    );
    write(&live, &base);
    let gw =
        portcullis::Gateway::start(portcullis::ConfigSource::File(live.clone())).expect("starts");
    let admin = format!("http://{}", gw.admin_addr().expect("admin"));
    let config = |args: &[&str], token: &str| {
        let out = Command::new(BIN)
            .arg("config")
            .args(args)
            .args(["--admin", &admin, "--token", token])
            .output()
            .expect("runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, exported, err) = config(&["export"], "sync-token-1");
    assert!(ok, "{err}");
    assert!(exported.contains("name: old"), "{exported}");

    // The desired state: `old` removed, `new` added (from the export, edited).
    let desired = dir.path().join("desired.yaml");
    let edited = exported
        .replace("name: old", "name: new")
        .replace("/old", "/new");
    write(&desired, &edited);
    let (ok, diff, err) = config(&["diff", desired.to_str().expect("path")], "sync-token-1");
    assert!(ok, "{err}");
    assert!(
        diff.contains("+ routes/new") && diff.contains("- routes/old"),
        "{diff}"
    );
    assert_eq!(gw.snapshot().routes.len(), 1, "diff changes nothing");
    let (ok, applied, err) = config(&["apply", desired.to_str().expect("path")], "sync-token-1");
    assert!(ok, "{err}");
    assert!(
        applied.contains("applied: configuration revision"),
        "{applied}"
    );
    let snap = gw.snapshot();
    assert_eq!(
        snap.routes
            .iter()
            .map(|r| r.name.to_string())
            .collect::<Vec<_>>(),
        ["new"]
    );
    let (ok, again, _) = config(&["diff", desired.to_str().expect("path")], "sync-token-1");
    assert!(ok && again.contains("no differences"), "{again}");
    // The node's file now holds the applied document.
    let saved = portcullis::config::load_file(&live).expect("valid");
    assert_eq!(saved.doc.routes[0].name, "new");

    let (ok, _, err) = config(&["export"], "wrong");
    assert!(!ok);
    assert!(err.contains("refused the credentials"), "{err}");
    let (ok, _, err) = config(&["diff", "/nonexistent.yaml"], "sync-token-1");
    assert!(!ok && err.contains("cannot read"), "{err}");
}
