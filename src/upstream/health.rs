//! Active health checks: every target of an upstream with a `health_check`
//! gets its own probe task, which sends an HTTP request on an interval and
//! takes the target down after `unhealthy_threshold` failures in a row, and
//! back up after `healthy_threshold` successes. The verdict is one atomic
//! flag in the target's stats: the request path reads it and shares no lock
//! with the probes. Targets start up, and the verdict survives reloads.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::stats::TargetStats;
use super::tls::UpstreamTls;
use crate::config::HealthCheckDoc;

/// How much of a probe's response body is read for `body_contains`.
const BODY_LIMIT: usize = 64 * 1024;

/// A compiled health check.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthCheck {
    method: Method,
    path: String,
    host: Option<String>,
    statuses: Vec<u16>,
    body_contains: Option<String>,
    /// Time between probes.
    pub interval: Duration,
    timeout: Duration,
    healthy_threshold: u32,
    unhealthy_threshold: u32,
}

impl HealthCheck {
    /// Compiles a validated `health_check` section.
    pub fn new(doc: &HealthCheckDoc) -> Result<HealthCheck, String> {
        Ok(HealthCheck {
            method: Method::from_bytes(doc.method.to_ascii_uppercase().as_bytes())
                .map_err(|_| "invalid method".to_string())?,
            path: doc.path.clone(),
            host: doc.host.clone(),
            statuses: doc.statuses.clone(),
            body_contains: doc.body_contains.clone(),
            interval: doc.interval.0,
            timeout: doc.timeout.0,
            healthy_threshold: doc.healthy_threshold.max(1),
            unhealthy_threshold: doc.unhealthy_threshold.max(1),
        })
    }

    fn status_ok(&self, s: StatusCode) -> bool {
        if self.statuses.is_empty() {
            s.is_success() || s.is_redirection()
        } else {
            self.statuses.contains(&s.as_u16())
        }
    }

    /// Sends one probe to `address` (over TLS when `tls` is set); true when it passed.
    pub async fn probe(&self, address: &str, tls: Option<&UpstreamTls>) -> bool {
        matches!(
            tokio::time::timeout(self.timeout, self.exchange(address, tls)).await,
            Ok(Ok(true))
        )
    }

    async fn exchange(
        &self,
        address: &str,
        tls: Option<&UpstreamTls>,
    ) -> Result<bool, Box<dyn std::error::Error + Send + Sync>> {
        let stream = TcpStream::connect(address).await?;
        let conn = match tls {
            None => {
                let (sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                (sender, tokio::spawn(async move { conn.await.map(|_| ()) }))
            }
            Some(t) => {
                let name = t.name_for(address).ok_or("no name to verify")?;
                let stream = tokio_rustls::TlsConnector::from(t.config.clone())
                    .connect(name, stream)
                    .await?;
                let (sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                (sender, tokio::spawn(async move { conn.await.map(|_| ()) }))
            }
        };
        let (mut sender, conn) = conn;
        let host = HeaderValue::from_str(self.host.as_deref().unwrap_or(address))?;
        let req = Request::builder()
            .method(self.method.clone())
            .uri(self.path.as_str())
            .header(http::header::HOST, host)
            .header(http::header::USER_AGENT, "portcullis-health-check")
            .header(http::header::CONNECTION, "close")
            .body(Empty::<Bytes>::new())?;
        let resp = sender.send_request(req).await?;
        let ok_status = self.status_ok(resp.status());
        let ok = match &self.body_contains {
            None => ok_status,
            Some(needle) => {
                // Read at most the first BODY_LIMIT bytes; a longer body is
                // judged on its beginning, not failed for its length.
                let mut body = resp.into_body();
                let mut seen: Vec<u8> = Vec::new();
                while seen.len() < BODY_LIMIT {
                    match body.frame().await {
                        Some(Ok(frame)) => {
                            if let Some(data) = frame.data_ref() {
                                seen.extend_from_slice(
                                    &data[..data.len().min(BODY_LIMIT - seen.len())],
                                );
                            }
                        }
                        Some(Err(_)) => return Ok(false),
                        None => break,
                    }
                }
                ok_status && String::from_utf8_lossy(&seen).contains(needle.as_str())
            }
        };
        conn.abort();
        Ok(ok)
    }
}

/// The streaks of one target's probes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Streaks {
    ok: u32,
    failed: u32,
}

/// A change of verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The target went down.
    Down,
    /// The target came back up.
    Up,
}

impl Streaks {
    /// Counts one probe result for a target that is `down` now; returns the
    /// new verdict when the streak crosses its threshold.
    pub fn observe(&mut self, passed: bool, down: bool, hc: &HealthCheck) -> Option<Verdict> {
        if passed {
            self.ok += 1;
            self.failed = 0;
            (down && self.ok >= hc.healthy_threshold).then_some(Verdict::Up)
        } else {
            self.failed += 1;
            self.ok = 0;
            (!down && self.failed >= hc.unhealthy_threshold).then_some(Verdict::Down)
        }
    }
}

/// Probes one target forever (until the task is aborted).
pub async fn run(
    hc: Arc<HealthCheck>,
    tls: Option<Arc<UpstreamTls>>,
    upstream: Arc<str>,
    address: Arc<str>,
    stats: Arc<TargetStats>,
) {
    let mut ticker = tokio::time::interval(hc.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut streaks = Streaks::default();
    loop {
        ticker.tick().await;
        let passed = hc.probe(&address, tls.as_deref()).await;
        match streaks.observe(passed, stats.is_down(), &hc) {
            Some(Verdict::Down) => {
                stats.set_down(true);
                tracing::warn!(upstream = %upstream, target = %address, "health check failed; target is down");
            }
            Some(Verdict::Up) => {
                stats.set_down(false);
                tracing::info!(upstream = %upstream, target = %address, "health check passed; target is up again");
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hc(healthy: u32, unhealthy: u32) -> HealthCheck {
        HealthCheck::new(&HealthCheckDoc {
            path: "/h".into(),
            method: "get".into(),
            host: None,
            statuses: vec![],
            body_contains: None,
            interval: crate::config::units::HumanDuration(Duration::from_secs(5)),
            timeout: crate::config::units::HumanDuration(Duration::from_secs(1)),
            healthy_threshold: healthy,
            unhealthy_threshold: unhealthy,
        })
        .expect("valid")
    }

    #[test]
    fn thresholds_decide_transitions_and_flaps_do_not() {
        let h = hc(2, 3);
        let mut s = Streaks::default();
        assert_eq!(s.observe(false, false, &h), None);
        assert_eq!(s.observe(false, false, &h), None);
        assert_eq!(
            s.observe(true, false, &h),
            None,
            "a pass breaks the failure streak"
        );
        assert_eq!(s.observe(false, false, &h), None);
        assert_eq!(s.observe(false, false, &h), None);
        assert_eq!(s.observe(false, false, &h), Some(Verdict::Down));
        assert_eq!(s.observe(true, true, &h), None);
        assert_eq!(
            s.observe(false, true, &h),
            None,
            "a flapping target stays down"
        );
        assert_eq!(s.observe(true, true, &h), None);
        assert_eq!(s.observe(true, true, &h), Some(Verdict::Up));
        assert!(h.status_ok(StatusCode::NO_CONTENT) && h.status_ok(StatusCode::FOUND));
        assert!(!h.status_ok(StatusCode::SERVICE_UNAVAILABLE));
    }
}
