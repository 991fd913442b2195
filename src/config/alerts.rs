//! `[alerts]`: channels, routing of triggers (their names are checked by `alerts`) and custom
//! alerts.

use super::raw::*;
use super::validate::V;
use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// STARTTLS on a plain connection (port 587).
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
    /// Plain text, for a trusted local relay only.
    None,
}

/// SMTP settings; unset ones come from `SMTP_HOST`, `SMTP_PORT`, `SMTP_USER`, `SMTP_PASSWORD`,
/// `SMTP_DEFAULT_FROM`, `SMTP_DEFAULT_REPLY_TO` at startup (the seed plugin's names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpSettings {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub password: SecretSource,
    pub from: Option<String>,
    pub reply_to: Option<String>,
    pub tls: SmtpTls,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelKind {
    /// Generic JSON webhook signed with HMAC-SHA256 when a secret is set.
    Webhook {
        url: ValueSource,
        secret: Option<SecretSource>,
    },
    Slack {
        url: ValueSource,
    },
    Discord {
        url: ValueSource,
    },
    Email {
        to: Vec<String>,
        smtp: SmtpSettings,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelConfig {
    pub name: String,
    pub kind: ChannelKind,
    pub rate_per_minute: u32,
}

/// A custom alert: a condition over a login (the risk rule variables, checked by
/// `risk::rules`) and its channels.
#[derive(Debug, Clone)]
pub struct CustomAlert {
    pub name: String,
    /// The config key of the condition (`alerts.custom[N].when`), for errors.
    pub key: String,
    pub when: String,
    pub channels: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct AlertsConfig {
    pub enabled: bool,
    /// Base URL of the admin dashboard, for "Force logout" links.
    pub dashboard_url: Option<String>,
    pub dedupe_window: Duration,
    pub max_attempts: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub timeout: Duration,
    pub score_threshold: u32,
    /// Delivered and dead alerts are deleted after this.
    pub retention: Duration,
    pub channels: std::collections::BTreeMap<String, ChannelConfig>,
    /// Trigger name → channel names.
    pub triggers: std::collections::BTreeMap<String, Vec<String>>,
    pub custom: Vec<CustomAlert>,
}

pub(super) fn validate_alerts(v: &mut V<'_>, a: RawAlerts, default_threshold: u32) -> AlertsConfig {
    let mut channels = std::collections::BTreeMap::new();
    for (name, c) in a.channels.unwrap_or_default() {
        let key = format!("alerts.channels.{name}");
        let url = match (c.url.filter(|u| !u.is_empty()), c.url_env.filter(|u| !u.is_empty())) {
            (Some(u), None) => {
                if !(u.starts_with("https://") || u.starts_with("http://")) {
                    v.err(&format!("{key}.url"), format!("{u:?} is not an http(s) URL"));
                }
                Some(ValueSource::Literal(u))
            }
            (None, Some(e)) => Some(ValueSource::Secret(SecretSource::Env(e))),
            (Some(_), Some(_)) => {
                v.err(&format!("{key}.url_env"), "set either url or url_env, not both");
                None
            }
            (None, None) => None,
        };
        let need_url = |v: &mut V<'_>, url: Option<ValueSource>| {
            url.unwrap_or_else(|| {
                v.err(&format!("{key}.url"), "required (or url_env)");
                ValueSource::Literal(String::new())
            })
        };
        let kind = match c.kind.as_deref() {
            Some("webhook") => ChannelKind::Webhook {
                url: need_url(v, url),
                secret: v.secret_source(
                    &format!("{key}.secret_env"),
                    c.secret_env,
                    &format!("{key}.secret_file"),
                    c.secret_file,
                ),
            },
            Some("slack") => ChannelKind::Slack { url: need_url(v, url) },
            Some("discord") => ChannelKind::Discord { url: need_url(v, url) },
            Some("email") => {
                let to: Vec<String> = c.to.unwrap_or_default();
                if to.is_empty() || to.iter().any(|t| !t.contains('@')) {
                    v.err(&format!("{key}.to"), "one or more e-mail addresses required");
                }
                let tls = v.choice(
                    &format!("{key}.tls"),
                    c.tls.as_deref(),
                    SmtpTls::StartTls,
                    &[("starttls", SmtpTls::StartTls), ("tls", SmtpTls::Tls), ("none", SmtpTls::None)],
                );
                ChannelKind::Email {
                    to,
                    smtp: SmtpSettings {
                        host: c.smtp_host,
                        port: c.smtp_port,
                        user: c.smtp_user,
                        password: SecretSource::Env(c.smtp_password_env.unwrap_or_else(|| "SMTP_PASSWORD".into())),
                        from: c.from,
                        reply_to: c.reply_to,
                        tls,
                    },
                }
            }
            other => {
                v.err(
                    &format!("{key}.type"),
                    format!("{other:?}: expected \"webhook\", \"slack\", \"discord\" or \"email\""),
                );
                continue;
            }
        };
        channels.insert(
            name.clone(),
            ChannelConfig { name, kind, rate_per_minute: c.rate_per_minute.unwrap_or(60).max(1) },
        );
    }
    let check_channels = |v: &mut V<'_>, key: &str, names: &[String]| {
        for n in names {
            if !channels.contains_key(n) {
                v.err(key, format!("unknown channel {n:?} (define it under [alerts.channels.{n}])"));
            }
        }
    };
    let triggers = a.triggers.unwrap_or_default();
    for (t, names) in &triggers {
        check_channels(v, &format!("alerts.triggers.{t}"), names);
    }
    let mut custom = Vec::new();
    for (i, c) in a.custom.unwrap_or_default().into_iter().enumerate() {
        let key = format!("alerts.custom[{i}]");
        let name = c.name.filter(|n| !n.is_empty()).unwrap_or_else(|| format!("custom{}", i + 1));
        let chans = c.channels.unwrap_or_default();
        check_channels(v, &format!("{key}.channels"), &chans);
        let Some(when) = c.when.filter(|w| !w.trim().is_empty()) else {
            v.err(&format!("{key}.when"), "required: a CEL condition");
            continue;
        };
        custom.push(CustomAlert { name, key: format!("{key}.when"), when, channels: chans });
    }
    AlertsConfig {
        enabled: a.enabled.unwrap_or(true),
        dashboard_url: a.dashboard_url.filter(|u| !u.is_empty()).map(|u| u.trim_end_matches('/').to_string()),
        dedupe_window: v.duration("alerts.dedupe_window", a.dedupe_window.as_deref(), "10m"),
        max_attempts: a.max_attempts.unwrap_or(8).max(1),
        backoff_initial: v.duration("alerts.backoff_initial", a.backoff_initial.as_deref(), "5s"),
        backoff_max: v.duration("alerts.backoff_max", a.backoff_max.as_deref(), "15m"),
        timeout: v.duration("alerts.timeout", a.timeout.as_deref(), "10s"),
        score_threshold: a.score_threshold.unwrap_or(default_threshold),
        retention: v.duration("alerts.retention", a.retention.as_deref(), "30d"),
        channels,
        triggers,
        custom,
    }
}
