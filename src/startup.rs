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

/// An AES-256 key.
type Key = [u8; 32];

/// The configured encryption keys, read and decoded: the current one (`None` when none is
/// configured) and the previous ones.
fn configured_keys(cfg: &Config) -> Result<(Option<Key>, Vec<Key>), StartupError> {
    let src = &cfg.sessions.encryption_key;
    let bad = |what: &str| StartupError::Secret(format!("sessions.encryption_key ({}): {what}", src.describe()));
    let current = match src.read_for("sessions.encryption_key").map_err(StartupError::Secret)? {
        Some(secret) => Some(crypto::decode_key(&secret).map_err(|e| bad(&e.to_string()))?),
        // Instances replicate sealed tokens to each other: a per-instance generated key would
        // leave every other instance unable to revoke them at the backend.
        None if cfg.cluster.is_some() => {
            return Err(bad("not set; every instance of a cluster must be given the same key"));
        }
        None => None,
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
    Ok((current, previous))
}

/// Reads the encryption keyring. With no key configured, one is generated into the data
/// directory (mode 0600) — loudly, since losing that file makes stored tokens unreadable.
pub(crate) async fn load_keyring(cfg: &Config) -> Result<Keyring, StartupError> {
    let (current, previous) = configured_keys(cfg)?;
    let current = match current {
        Some(key) => key,
        None => {
            let path = cfg.store.data_dir.join("encryption.key");
            let text = generated_secret(&path).await?;
            let key = crypto::decode_key(&config::Secret::new(text))
                .map_err(|e| StartupError::Secret(format!("{}: {e}", path.display())))?;
            tracing::warn!(
                file = %path.display(),
                "no encryption key configured ({}); using a key file in the data directory. \
                 Set SESSION_ENCRYPTION_KEY (see `sessiongate keygen`) for production and keep it safe",
                cfg.sessions.encryption_key.describe()
            );
            key
        }
    };
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

/// The shortest admin token accepted: a guessable token would make the admin port's limit on
/// failed logins the only protection.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// The configured admin tokens, read and checked.
fn configured_admin_tokens(cfg: &Config) -> Result<Vec<(String, config::Secret)>, StartupError> {
    let mut out = Vec::new();
    for (i, t) in cfg.admin.tokens.iter().enumerate() {
        let key = format!("admin.tokens[{i}]");
        let secret = t.source.require(&key).map_err(StartupError::Secret)?;
        if secret.expose().len() < MIN_ADMIN_TOKEN_LEN {
            return Err(StartupError::Secret(format!(
                "{key} ({}): must be at least {MIN_ADMIN_TOKEN_LEN} characters",
                t.source.describe()
            )));
        }
        out.push((t.name.clone(), secret));
    }
    Ok(out)
}

/// The admin tokens: the configured ones, or one generated into `data_dir/admin.token`
/// (config validation allows that only on a loopback address).
pub(crate) async fn load_admin_tokens(cfg: &Config) -> Result<Vec<(String, config::Secret)>, StartupError> {
    let mut out = configured_admin_tokens(cfg)?;
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

/// Everything `run` reads before it serves, read the same way but nothing written or bound:
/// the encryption keys, admin tokens, JWT key, TLS files, the upstream client's settings,
/// GeoIP databases and address lists, the roles token, alert channel secrets, the cluster's
/// Redis URL and CA file, and the data directory. Every problem is returned, not just the
/// first; secrets appear only by their source (`env FOO`, `file /x`). Blocking (it reads
/// files): `check-config` runs it before any runtime work.
pub fn preflight(cfg: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    let mut check = |r: Result<(), StartupError>| {
        if let Err(e) = r {
            problems.push(e.to_string());
        }
    };
    check(configured_keys(cfg).map(drop));
    if cfg.admin.enabled {
        check(configured_admin_tokens(cfg).map(drop));
    }
    check(load_verifier(cfg).map(drop));
    if let Some(files) = &cfg.server.tls {
        check(crate::backend::tls::server_config(files).map(drop));
    }
    check(crate::backend::Upstream::new(&cfg.upstream).map(drop));
    let geo = crate::geo::Geo::new(&cfg.geo);
    for (key, e) in geo.reload_blocking(true).failed {
        check(Err(StartupError::Geo(format!("{key}: {e}"))));
    }
    if let Some(src) = &cfg.roles.token {
        check(src.require("roles.token").map(drop).map_err(StartupError::Secret));
    }
    check(crate::alerts::channels::Sender::new(&cfg.alerts).map(drop));
    if let Some(cc) = &cfg.cluster {
        if let Some(config::ValueSource::Secret(src)) = &cc.redis_url {
            check(src.require("cluster.redis_url").map(drop).map_err(StartupError::Secret));
        }
        if let Some(ca) = &cc.tls_ca_file {
            check(
                std::fs::read(ca)
                    .map(drop)
                    .map_err(|e| StartupError::Cluster(format!("cluster.tls_ca_file {}: {e}", ca.display()))),
            );
        }
    }
    check(data_dir_usable(&cfg.store.data_dir));
    problems
}

/// The data directory exists and is a writable directory, or can be created.
fn data_dir_usable(dir: &std::path::Path) -> Result<(), StartupError> {
    let bad = |what: String| StartupError::Secret(format!("store.data_dir {}: {what}", dir.display()));
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => Err(bad("not a directory".into())),
        Ok(m) if m.permissions().readonly() => Err(bad("read-only".into())),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // `run` creates it: its nearest existing ancestor must be a directory.
            let mut up = dir.parent();
            while let Some(p) = up.filter(|p| !p.as_os_str().is_empty()) {
                match std::fs::metadata(p) {
                    Ok(m) if m.is_dir() => return Ok(()),
                    Ok(_) => return Err(bad(format!("{} is not a directory", p.display()))),
                    Err(_) => up = p.parent(),
                }
            }
            Ok(())
        }
        Err(e) => Err(bad(e.to_string())),
    }
}
