//! Plugins: the unit of policy. A plugin is attached globally (`plugins:`), to
//! a route (`routes[].plugins`) or, later, to a consumer, as a one-key mapping
//! `{plugin_name: config}`.
//!
//! This build ships no plugins yet: the registry below is where each plugin
//! registers its name and config check (see `docs/plugins.md`). Until a name is
//! registered, attaching it is a configuration error rather than being
//! silently ignored, so a typo or a missing feature never fails open.

/// Names of the plugins this build knows, each with the function that checks
/// its configuration (the registration point for new plugins).
type ConfigCheck = fn(&serde_json::Value) -> Result<(), String>;

/// Registered plugins. Empty for now; authentication and limits add entries.
const REGISTRY: &[(&str, ConfigCheck)] = &[];

/// Checks one plugin attachment; reports problems through `err(path, message)`.
pub fn check_doc(doc: &crate::config::PluginDoc, path: &str, err: &mut dyn FnMut(&str, String)) {
    if doc.0.len() != 1 {
        err(
            path,
            "a plugin entry is a one-key mapping, like `- key_auth: {}`".into(),
        );
        return;
    }
    for (name, config) in &doc.0 {
        match REGISTRY.iter().find(|(n, _)| n == name) {
            Some((_, check)) => {
                if let Err(e) = check(config) {
                    err(&format!("{path}.{name}"), e);
                }
            }
            None => {
                let known: Vec<&str> = REGISTRY.iter().map(|(n, _)| *n).collect();
                let list = if known.is_empty() {
                    "this build has no plugins yet".to_string()
                } else {
                    format!("known plugins: {}", known.join(", "))
                };
                err(
                    &format!("{path}.{name}"),
                    format!("unknown plugin `{name}`; {list}"),
                );
            }
        }
    }
}
