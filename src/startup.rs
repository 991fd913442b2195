//! What the gateway reads before it serves: the configuration (with every check, including
//! those of the layers that own a vocabulary), the encryption keyring, the admin tokens, the
//! JWT verifier, and the secret files it generates when none is configured.

use crate::config::{self, Config, ConfigErrors};
use crate::error::StartupError;
use crate::session::crypto::{self, Keyring};
use crate::session::tokens::Verifier;

/// Every configuration check owned above `config`: the rule language (`risk::rules`) and the
/// alert triggers (`alerts`).
pub const CONFIG_CHECKS: config::Checks = &[crate::risk::rules::check_config, crate::alerts::check_config];

/// Reads and validates a configuration file with every check.
pub fn load_config(path: &std::path::Path) -> Result<Config, ConfigErrors> {
    Config::from_file(path, CONFIG_CHECKS)
}

/// Parses and validates a configuration text with every check.
pub fn parse_config(text: &str) -> Result<Config, ConfigErrors> {
    Config::from_toml_str(text, CONFIG_CHECKS)
}

/// Reads the encryption keyring. With no key configured, one is generated into the data
/// directory (mode 0600) — loudly, since losing that file makes stored tokens unreadable.
pub(crate) async fn load_keyring(cfg: &Config) -> Result<Keyring, StartupError> {
    let src = &cfg.sessions.encryption_key;
    let bad = |what: &str| StartupError::Secret(format!("sessions.encryption_key ({}): {what}", src.describe()));
    let current = match src.read_for("sessions.encryption_key").map_err(StartupError::Secret)? {
        Some(secret) => crypto::decode_key(&secret).map_err(|e| bad(&e.to_string()))?,
        // Instances replicate sealed tokens to each other: a per-instance generated key would
        // leave every other instance unable to revoke them at the backend.
        None if cfg.cluster.is_some() => {
            return Err(bad("not set; every instance of a cluster must be given the same key"));
        }
        None => {
            let path = cfg.store.data_dir.join("encryption.key");
            let text = generated_secret(&path).await?;
            let key = crypto::decode_key(&config::Secret::new(text))
                .map_err(|e| StartupError::Secret(format!("{}: {e}", path.display())))?;
            tracing::warn!(
                file = %path.display(),
                "no encryption key configured ({}); using a key file in the data directory. \
                 Set SESSION_ENCRYPTION_KEY (see `sessiongate keygen`) for production and keep it safe",
                src.describe()
            );
            key
        }
    };
    let mut previous = Vec::new();
    if let Some(prev) = &cfg.sessions.previous_keys {
        if let Some(list) = prev.read_for("sessions.previous_keys").map_err(StartupError::Secret)? {
            let text = String::from_utf8_lossy(list.expose()).to_string();
            for (i, k) in text.split(',').map(str::trim).filter(|s| !s.is_empty()).enumerate() {
                let key = crypto::decode_key(&config::Secret::new(k)).map_err(|e| {
                    StartupError::Secret(format!("sessions.previous_keys ({}), key #{}: {e}", prev.describe(), i + 1))
                })?;
                previous.push(key);
            }
        }
    }
    Ok(Keyring::new(current, &previous))
}

/// [`read_or_create_secret_file`] off the async threads.
async fn generated_secret(path: &std::path::Path) -> Result<String, StartupError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || read_or_create_secret_file(&path))
        .await
        .map_err(|e| StartupError::Secret(e.to_string()))?
        .map_err(StartupError::Secret)
}

/// Reads a generated secret (base64 of 32 random bytes), creating it with mode 0600 first if
/// it does not exist.
fn read_or_create_secret_file(path: &std::path::Path) -> Result<String, String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Ok(text) = std::fs::read_to_string(path) {
        return Ok(text.trim().to_string());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let key = crypto::generate_key();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(key.as_bytes()).and_then(|_| f.sync_all()).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(key)
}

/// The admin tokens: the configured ones, or one generated into `data_dir/admin.token`
/// (config validation allows that only on a loopback address).
pub(crate) async fn load_admin_tokens(cfg: &Config) -> Result<Vec<(String, config::Secret)>, StartupError> {
    let mut out = Vec::new();
    for (i, t) in cfg.admin.tokens.iter().enumerate() {
        let key = format!("admin.tokens[{i}]");
        let secret = t.source.require(&key).map_err(StartupError::Secret)?;
        let bad = |what: &str| StartupError::Secret(format!("{key} ({}): {what}", t.source.describe()));
        if secret.expose().len() < 16 {
            return Err(bad("must be at least 16 characters"));
        }
        out.push((t.name.clone(), secret));
    }
    if out.is_empty() {
        let path = cfg.store.data_dir.join("admin.token");
        let token = generated_secret(&path).await?;
        tracing::warn!(file = %path.display(), "no admin token configured; the admin API token is in this file (mode 0600)");
        out.push(("local".to_string(), config::Secret::new(token)));
    }
    Ok(out)
}

pub(crate) fn load_verifier(cfg: &Config) -> Result<Option<Verifier>, StartupError> {
    let Some(jwt) = &cfg.jwt else { return Ok(None) };
    let key = jwt.key.require("jwt key").map_err(StartupError::Secret)?;
    Verifier::new(jwt, key.expose())
        .map(Some)
        .map_err(|e| StartupError::Secret(format!("jwt key ({}): {e}", jwt.key.describe())))
}
