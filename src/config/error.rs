//! Configuration errors: each says what is wrong, where (document path, line
//! and column) and, where it can, how to fix it.

use std::fmt;

/// A 1-based line and column in the configuration source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    /// Line, starting at 1.
    pub line: usize,
    /// Column, starting at 1.
    pub col: usize,
}

/// One problem found in a configuration document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Path of the offending value, like `routes[2].match.paths[0]` (empty for the whole document).
    pub path: String,
    /// Where that value is in the source, when known.
    pub pos: Option<Pos>,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl ConfigError {
    /// An error at `path`, positioned at `pos`.
    pub fn at(path: &str, pos: Option<Pos>, message: impl Into<String>) -> Self {
        Self {
            path: path.to_string(),
            pos,
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "<document>"
        } else {
            &self.path
        };
        match self.pos {
            Some(p) => write!(
                f,
                "{path} (line {}, col {}): {}",
                p.line, p.col, self.message
            ),
            None => write!(f, "{path}: {}", self.message),
        }
    }
}

/// Every error found in one configuration document; never empty.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors {
    /// Where the document came from (a file path, or `<inline>`).
    pub source_name: String,
    /// The errors, in document order.
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        writeln!(
            f,
            "{}: {n} configuration error{}:",
            self.source_name,
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.errors {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}
