//! A real single-member `etcd` for tests (Debian's `etcd-server`, which
//! `scripts/test.sh` installs): started on free ports with its own data
//! folder, stopped and started again with the same data, killed when dropped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::redis::free_port;

/// A running etcd.
pub struct Etcd {
    /// The client port.
    pub port: u16,
    peer: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// With TLS: the folder holding `ca.pem`, `etcd.pem`/`etcd.key` (the
    /// server's) and `client.pem`/`client.key` (a client certificate etcd
    /// requires).
    tls: Option<std::path::PathBuf>,
    /// More command-line flags.
    flags: Vec<String>,
}

impl Etcd {
    /// Starts etcd and waits until it answers.
    pub fn start() -> Etcd {
        Etcd::launch(None, &[])
    }

    /// Starts etcd with more command-line flags.
    pub fn start_with(flags: &[&str]) -> Etcd {
        Etcd::launch(None, flags)
    }

    /// Starts etcd on free ports, with TLS when `tls` names the certificates.
    fn launch(tls: Option<&std::path::Path>, flags: &[&str]) -> Etcd {
        let mut e = Etcd {
            port: free_port(),
            peer: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
            tls: tls.map(std::path::Path::to_path_buf),
            flags: flags.iter().map(|f| f.to_string()).collect(),
        };
        e.spawn();
        e
    }

    /// Turns on etcd's user authentication with a `root` user (password
    /// `root_password`, every permission) and a user `nobody` (password
    /// `nobody`, no role), as an operator would with `etcdctl user add`,
    /// `user grant-role` and `auth enable` (through the JSON gateway).
    pub fn enable_auth(&self, root_password: &str) {
        for (path, body) in [
            (
                "user/add",
                format!("{{\"name\":\"root\",\"password\":\"{root_password}\"}}"),
            ),
            ("role/add", "{\"name\":\"root\"}".to_string()),
            (
                "user/grant",
                "{\"user\":\"root\",\"role\":\"root\"}".to_string(),
            ),
            (
                "user/add",
                "{\"name\":\"nobody\",\"password\":\"nobody\"}".to_string(),
            ),
            ("enable", "{}".to_string()),
        ] {
            let out = self.post(&format!("/v3/auth/{path}"), &body);
            assert!(out.contains("\"header\""), "{path}: {out}");
        }
    }

    fn post(&self, path: &str, body: &str) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("etcd");
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .expect("write");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    /// Starts etcd serving clients over TLS only and requiring a client
    /// certificate (`--client-cert-auth`), with the files in `certs` (see
    /// [`Etcd::tls`]).
    pub fn start_tls(certs: &std::path::Path) -> Etcd {
        Etcd::launch(Some(certs), &[])
    }

    /// `http://127.0.0.1:<port>`, or `https://` with TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let client = self.url();
        let peer = format!("http://127.0.0.1:{}", self.peer);
        let bin = std::env::var("ETCD_BIN").unwrap_or_else(|_| "/usr/bin/etcd".into());
        let mut command = Command::new(bin);
        if let Some(certs) = &self.tls {
            command
                .arg("--cert-file")
                .arg(certs.join("etcd.pem"))
                .arg("--key-file")
                .arg(certs.join("etcd.key"))
                .arg("--trusted-ca-file")
                .arg(certs.join("ca.pem"))
                .arg("--client-cert-auth");
        }
        let child = command
            .args(&self.flags)
            .args(["--name", "test", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("test={peer}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd runs (scripts/test.sh installs etcd-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        if let Some(certs) = &self.tls {
            while Instant::now() < deadline {
                let out = Command::new("curl")
                    .args(["-s", "--max-time", "1", "--cacert"])
                    .arg(certs.join("ca.pem"))
                    .arg("--cert")
                    .arg(certs.join("client.pem"))
                    .arg("--key")
                    .arg(certs.join("client.key"))
                    .arg(format!("{client}/health"))
                    .output()
                    .expect("curl runs (scripts/test.sh installs it)");
                if String::from_utf8_lossy(&out.stdout).contains("\"health\":\"true\"") {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            panic!("etcd did not become healthy on {client}");
        }
        let health = format!("127.0.0.1:{}", self.port);
        while Instant::now() < deadline {
            if let Ok(mut s) = std::net::TcpStream::connect(&health) {
                use std::io::{Read, Write};
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let _ =
                    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                let mut out = String::new();
                let _ = s.read_to_string(&mut out);
                if out.contains("\"health\":\"true\"") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("etcd did not become healthy on {client}");
    }

    /// Deletes `key`, as an operator running `etcdctl del` would (through
    /// etcd's JSON gateway, so the tests need no `etcdctl`).
    pub fn delete(&self, key: &str) {
        use base64::Engine as _;
        let body = format!(
            "{{\"key\":\"{}\"}}",
            base64::engine::general_purpose::STANDARD.encode(key)
        );
        let out = self.post("/v3/kv/deleterange", &body);
        assert!(out.contains("\"deleted\":\"1\""), "{out}");
    }

    /// Stops etcd (its data stays).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again with the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}
