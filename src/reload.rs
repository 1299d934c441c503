//! Live reload triggers for a running node: the config file is polled for
//! changes, and `SIGHUP` forces a reload. Polling (rather than inotify)
//! also catches editors that replace the file and Kubernetes ConfigMap
//! symlink swaps. A file whose content did not change is not re-applied.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::gateway::Gateway;

/// A hash of the contents of `paths`; `None` while any cannot be read
/// (an editor may be mid-save).
fn fingerprint(paths: &[PathBuf]) -> Option<u64> {
    let mut h = DefaultHasher::new();
    for p in paths {
        std::fs::read(p).ok()?.hash(&mut h);
    }
    Some(h.finish())
}

/// The config file and every certificate and key file it references.
fn watched(gw: &Gateway, config: &Path) -> Vec<PathBuf> {
    let snap = gw.snapshot();
    let tls_files = snap
        .listeners
        .iter()
        .filter_map(|l| l.tls.as_ref())
        .flat_map(|t| t.files.iter().cloned());
    std::iter::once(config.to_path_buf())
        .chain(tls_files)
        .collect()
}

/// Reloads and logs the outcome; invalid documents are logged with every error.
pub fn reload_and_log(gw: &Gateway, why: &str) {
    log_outcome(gw.reload(), why);
}

/// Logs what a reload triggered by `why` did.
pub fn log_outcome(result: Result<u64, crate::gateway::ApplyError>, why: &str) {
    match result {
        Ok(rev) => tracing::info!(revision = rev, trigger = why, "reloaded configuration"),
        Err(e) => tracing::error!(
            trigger = why,
            "reload rejected, previous configuration keeps serving:\n{e}"
        ),
    }
}

/// Polls `path`, and the certificate and key files it references, and
/// reloads when any content changes. The interval is read
/// from the current snapshot on every turn, so a reload that changes
/// `gateway.watch_interval` (or sets it to `0s` to pause watching, leaving
/// SIGHUP as the trigger) takes effect at once.
pub async fn watch_file(gw: Arc<Gateway>, path: PathBuf) {
    let mut last = fingerprint(&watched(&gw, &path));
    loop {
        let interval = gw.snapshot().settings.watch_interval;
        if interval.is_zero() {
            // Paused: look again later in case a SIGHUP reload turns it back on.
            tokio::time::sleep(Duration::from_secs(1)).await;
            last = fingerprint(&watched(&gw, &path));
            continue;
        }
        tokio::time::sleep(interval).await;
        let Some(hash) = fingerprint(&watched(&gw, &path)) else {
            continue;
        };
        if last != Some(hash) {
            last = Some(hash);
            // The gateway's own Admin API write is already applied.
            if std::fs::read(&path).is_ok_and(|b| gw.is_own_write(&b)) {
                continue;
            }
            reload_and_log(&gw, "file changed");
        }
    }
}

/// Reloads on every `SIGHUP` until the process ends.
pub async fn reload_on_sighup(gw: Arc<Gateway>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot install the SIGHUP handler; reload by editing the file");
        return;
    };
    while hup.recv().await.is_some() {
        reload_and_log(&gw, "SIGHUP");
    }
}

/// Reopens the access log files on every `SIGUSR1` (after logrotate
/// moved them) until the process ends.
pub async fn reopen_logs_on_sigusr1() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
        tracing::warn!("cannot install the SIGUSR1 handler; access logs will not be reopened");
        return;
    };
    while usr1.recv().await.is_some() {
        tracing::info!("SIGUSR1: reopening access log files");
        crate::observability::access_log::request_reopen();
    }
}

/// Resolves when `SIGTERM` or `SIGINT` arrives.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {}
                _ = i.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
