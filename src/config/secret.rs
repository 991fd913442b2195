//! Secrets: values that must never reach a log line, a `Debug` dump or `check-config` output.

use std::fmt;

/// A secret value. `Debug` and `Display` print `[redacted]`; the value is reachable only through
/// [`Secret::expose`], which makes every use greppable.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Secret(bytes.into())
    }
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where a secret comes from: an environment variable or a file (trailing newline trimmed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    File(std::path::PathBuf),
}

impl SecretSource {
    /// Reads the secret. `Ok(None)` means "not set" (env var absent), which callers may accept.
    pub fn load(&self) -> Result<Option<Secret>, String> {
        match self {
            SecretSource::Env(name) => match std::env::var(name) {
                Ok(v) if !v.trim().is_empty() => Ok(Some(Secret::new(v.trim().as_bytes()))),
                Ok(_) | Err(std::env::VarError::NotPresent) => Ok(None),
                Err(std::env::VarError::NotUnicode(_)) => {
                    Err(format!("environment variable {name} is not valid UTF-8"))
                }
            },
            SecretSource::File(path) => match std::fs::read(path) {
                Ok(mut bytes) => {
                    while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
                        bytes.pop();
                    }
                    Ok(Some(Secret::new(bytes)))
                }
                Err(e) => Err(format!("cannot read {}: {e}", path.display())),
            },
        }
    }

    /// Reads the secret of config key `key`; an error names the key and the source.
    pub fn read_for(&self, key: &str) -> Result<Option<Secret>, String> {
        self.load().map_err(|e| format!("{key} ({}): {e}", self.describe()))
    }

    /// Reads a secret that must be set; an error (unreadable or not set) names the key and the
    /// source.
    pub fn require(&self, key: &str) -> Result<Secret, String> {
        self.read_for(key)?.ok_or_else(|| format!("{key} ({}): not set", self.describe()))
    }

    pub fn describe(&self) -> String {
        match self {
            SecretSource::Env(name) => format!("env {name}"),
            SecretSource::File(p) => format!("file {}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
        assert_eq!(s.expose(), b"hunter2");
    }

    #[test]
    fn a_required_secret_names_its_key_and_source() {
        let src = SecretSource::Env("SESSIONGATE_TEST_SURELY_UNSET_VAR".into());
        assert_eq!(src.read_for("jwt.key").map(|s| s.is_none()), Ok(true));
        assert_eq!(src.require("jwt.key"), Err("jwt.key (env SESSIONGATE_TEST_SURELY_UNSET_VAR): not set".into()));
        let file = SecretSource::File("/nonexistent/secret".into());
        assert!(file
            .require("admin.tokens[0]")
            .is_err_and(|e| e.starts_with("admin.tokens[0] (file /nonexistent/secret): cannot read")));
    }
}
