//! The single-node store: Admin API writes are saved back to the YAML file
//! the gateway was started with, atomically (a temporary file in the same
//! folder, fsync, rename, fsync of the folder), so a crash leaves either the
//! old or the new document and a restart comes back with the last write.
//! Comments in the user's file are not kept.

use std::io::Write;
use std::path::Path;

use serde_json::Value;

use crate::config::document::to_yaml;

/// The first lines of a file written by the gateway.
const HEADER: &str = "# Written by the Portcullis Admin API; comments are not kept.\n";

/// Writes `doc` as YAML to `path`, replacing it atomically. Returns the
/// bytes written (the file watcher uses them to skip its own writes).
pub fn save(path: &Path, doc: &Value) -> std::io::Result<Vec<u8>> {
    let text = render(doc);
    write_atomic(path, text.as_bytes())?;
    Ok(text.into_bytes())
}

/// The file text for `doc`: a header line, then the YAML.
pub fn render(doc: &Value) -> String {
    format!("{HEADER}{}", to_yaml(doc))
}

/// Replaces `path` with `bytes` so readers see the old or the new content,
/// never a mix: write a temporary sibling, fsync it, rename it over `path`,
/// fsync the folder. The file keeps its permissions.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        if let Ok(meta) = std::fs::metadata(path) {
            f.set_permissions(meta.permissions())?;
        }
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn saves_a_document_that_loads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gw.yaml");
        std::fs::write(&path, "# my comment\nroutes: []\n").expect("seed");
        let doc = json!({
            "listeners": [{"name": "main", "address": "127.0.0.1:0"}],
            "routes": [{"name": "r", "match": {"paths": ["/x"]}, "respond": {"status": 204}}],
        });
        save(&path, &doc).expect("saved");
        let loaded = crate::config::load_file(&path).expect("loads");
        assert_eq!(loaded.raw, doc);
        assert_eq!(loaded.doc.routes.len(), 1);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn a_folder_that_cannot_be_written_is_an_error() {
        let err = save(Path::new("/proc/portcullis-no/gw.yaml"), &json!({}));
        assert!(err.is_err());
    }
}
