//! Alert channels: generic signed webhook, Slack (Block Kit), Discord (embed), e-mail (SMTP).
//! Payload builders are pure functions; `Sender` does the I/O.

use crate::config::{ChannelConfig, ChannelKind, Secret, SecretSource, SmtpTls, ValueSource};
use crate::error::StartupError;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{header, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use sha2::Sha256;
use std::collections::HashMap;
use std::time::Duration;

/// `hex(HMAC-SHA256(secret, "{timestamp}.{body}"))`, sent as `X-Sessiongate-Signature: sha256=…`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable_hmac());
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

// HMAC accepts keys of any length; this cannot happen.
fn unreachable_hmac() -> Hmac<Sha256> {
    <Hmac<Sha256> as Mac>::new_from_slice(&[0u8; 32]).unwrap_or_else(|_| unreachable_hmac())
}

fn field(v: &Value) -> String {
    match v {
        Value::Null => "—".into(),
        Value::String(s) if s.is_empty() => "—".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn user_label(e: &Value) -> String {
    let u = &e["user"];
    match (u["email"].as_str(), u["username"].as_str(), u["id"].as_str()) {
        (Some(m), _, _) => m.to_string(),
        (None, Some(n), _) => n.to_string(),
        (None, None, Some(id)) => format!("user {id}"),
        _ => "—".into(),
    }
}

fn country_label(e: &Value) -> String {
    let g = &e["geo"];
    match (g["flag"].as_str(), g["countryCode"].as_str(), g["city"].as_str()) {
        (Some(f), Some(c), Some(city)) => format!("{f} {c}, {city}"),
        (Some(f), Some(c), None) => format!("{f} {c}"),
        (_, Some(c), _) => c.to_string(),
        _ => "—".into(),
    }
}

fn vpn_label(e: &Value) -> &'static str {
    if e["flags"]["isVpn"] == true {
        "yes"
    } else {
        "no"
    }
}

/// Link to the session in the admin dashboard.
pub fn session_link(dashboard: Option<&str>, e: &Value) -> Option<String> {
    Some(format!("{}/#/sessions/{}", dashboard?, e["session"].as_str()?))
}

pub fn slack_payload(e: &Value, dashboard: Option<&str>) -> Value {
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": format!("🔐 {}", field(&e["title"]))}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": field(&e["summary"])}}),
        json!({"type": "section", "fields": [
            {"type": "mrkdwn", "text": format!("*User*\n{}", user_label(e))},
            {"type": "mrkdwn", "text": format!("*IP*\n{}", field(&e["ip"]))},
            {"type": "mrkdwn", "text": format!("*Country*\n{}", country_label(e))},
            {"type": "mrkdwn", "text": format!("*VPN*\n{}", vpn_label(e))},
            {"type": "mrkdwn", "text": format!("*Threat score*\n{}", field(&e["score"]))},
            {"type": "mrkdwn", "text": format!("*Time*\n{}", field(&e["time"]))},
        ]}),
    ];
    if let Some(url) = session_link(dashboard, e) {
        blocks.push(json!({"type": "actions", "elements": [{
            "type": "button", "style": "danger", "action_id": "force_logout",
            "text": {"type": "plain_text", "text": "Force logout"}, "url": url,
        }]}));
    }
    json!({"text": field(&e["summary"]), "blocks": blocks})
}

pub fn discord_payload(e: &Value, dashboard: Option<&str>) -> Value {
    let mut embed = json!({
        "title": field(&e["title"]),
        "description": field(&e["summary"]),
        "color": 0xD9_2D_20,
        "timestamp": e["time"],
        "fields": [
            {"name": "User", "value": user_label(e), "inline": true},
            {"name": "IP", "value": field(&e["ip"]), "inline": true},
            {"name": "Country", "value": country_label(e), "inline": true},
            {"name": "VPN", "value": vpn_label(e), "inline": true},
            {"name": "Threat score", "value": field(&e["score"]), "inline": true},
        ],
        "footer": {"text": "sessiongate"},
    });
    if let Some(url) = session_link(dashboard, e) {
        embed["url"] = url.into();
    }
    json!({"content": field(&e["summary"]), "embeds": [embed]})
}

/// Plain-text and HTML bodies of an alert e-mail.
pub fn email_bodies(e: &Value, dashboard: Option<&str>) -> (String, String) {
    let rows = [
        ("User", user_label(e)),
        ("IP", field(&e["ip"])),
        ("Country", country_label(e)),
        ("VPN", vpn_label(e).to_string()),
        ("Threat score", field(&e["score"])),
        ("Session", field(&e["session"])),
        ("Time", field(&e["time"])),
    ];
    let link = session_link(dashboard, e);
    let mut text = format!("{}\n\n", field(&e["summary"]));
    for (k, v) in &rows {
        text.push_str(&format!("{k}: {v}\n"));
    }
    if let Some(l) = &link {
        text.push_str(&format!("\nForce logout: {l}\n"));
    }
    let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;");
    let mut html = format!("<p>{}</p><table>", esc(&field(&e["summary"])));
    for (k, v) in &rows {
        html.push_str(&format!("<tr><th align=\"left\">{}</th><td>{}</td></tr>", esc(k), esc(v)));
    }
    html.push_str("</table>");
    if let Some(l) = &link {
        html.push_str(&format!("<p><a href=\"{}\">Force logout</a></p>", esc(l)));
    }
    (text, html)
}

/// A channel with its secrets read.
enum Resolved {
    Http {
        url: String,
        secret: Option<Secret>,
    },
    Email {
        to: Vec<String>,
        host: String,
        port: Option<u16>,
        user: Option<String>,
        password: Option<Secret>,
        from: String,
        reply_to: Option<String>,
        tls: SmtpTls,
    },
}

pub struct Sender {
    client: Client<crate::backend::tls::UpstreamConnector, Full<Bytes>>,
    dashboard: Option<String>,
    channels: HashMap<String, (ChannelConfig, Resolved)>,
}

fn read(src: &SecretSource, key: &str) -> Result<Secret, StartupError> {
    src.require(key).map_err(StartupError::Secret)
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Sender {
    pub fn new(cfg: &crate::config::AlertsConfig) -> Result<Sender, StartupError> {
        let mut channels = HashMap::new();
        for (name, ch) in &cfg.channels {
            let key = format!("alerts.channels.{name}");
            let url = |u: &ValueSource| -> Result<String, StartupError> {
                match u {
                    ValueSource::Literal(s) => Ok(s.clone()),
                    ValueSource::Secret(src) => {
                        Ok(String::from_utf8_lossy(read(src, &format!("{key}.url_env"))?.expose()).to_string())
                    }
                }
            };
            let resolved =
                match &ch.kind {
                    ChannelKind::Webhook { url: u, secret } => Resolved::Http {
                        url: url(u)?,
                        secret: secret.as_ref().map(|s| read(s, &format!("{key}.secret_env"))).transpose()?,
                    },
                    ChannelKind::Slack { url: u } | ChannelKind::Discord { url: u } => {
                        Resolved::Http { url: url(u)?, secret: None }
                    }
                    ChannelKind::Email { to, smtp } => {
                        let host =
                            smtp.host.clone().or_else(|| env("SMTP_HOST")).ok_or_else(|| {
                                StartupError::Secret(format!("{key}.smtp_host: not set (nor SMTP_HOST)"))
                            })?;
                        let from = smtp.from.clone().or_else(|| env("SMTP_DEFAULT_FROM")).ok_or_else(|| {
                            StartupError::Secret(format!("{key}.from: not set (nor SMTP_DEFAULT_FROM)"))
                        })?;
                        let user = smtp.user.clone().or_else(|| env("SMTP_USER"));
                        let password = match user {
                            Some(_) => Some(read(&smtp.password, &format!("{key}.smtp_password_env"))?),
                            None => None,
                        };
                        Resolved::Email {
                            to: to.clone(),
                            host,
                            port: smtp.port.or_else(|| env("SMTP_PORT").and_then(|p| p.parse().ok())),
                            user,
                            password,
                            from,
                            reply_to: smtp.reply_to.clone().or_else(|| env("SMTP_DEFAULT_REPLY_TO")),
                            tls: smtp.tls,
                        }
                    }
                };
            channels.insert(name.clone(), (ch.clone(), resolved));
        }
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(cfg.timeout));
        let connector = crate::backend::tls::upstream_connector(http.clone(), true)
            .or_else(|_| crate::backend::tls::upstream_connector(http, false))?;
        Ok(Sender {
            client: Client::builder(TokioExecutor::new()).build(connector),
            dashboard: cfg.dashboard_url.clone(),
            channels,
        })
    }

    pub fn rate_per_minute(&self, channel: &str) -> Option<u32> {
        self.channels.get(channel).map(|(c, _)| c.rate_per_minute)
    }

    pub fn has(&self, channel: &str) -> bool {
        self.channels.contains_key(channel)
    }

    /// Delivers `event` to `channel`. `Err` is a reason to retry.
    pub async fn send(&self, channel: &str, event: &Value, timeout: Duration) -> Result<(), String> {
        let (cfg, resolved) = self.channels.get(channel).ok_or_else(|| format!("unknown channel {channel}"))?;
        let dash = self.dashboard.as_deref();
        let work = async {
            match resolved {
                Resolved::Http { url, secret } => {
                    let body = match cfg.kind {
                        ChannelKind::Slack { .. } => slack_payload(event, dash),
                        ChannelKind::Discord { .. } => discord_payload(event, dash),
                        _ => event.clone(),
                    }
                    .to_string();
                    let ts = crate::clock::now_ms() / 1000;
                    let mut req = Request::post(url.as_str())
                        .header(header::CONTENT_TYPE, "application/json")
                        .header(header::USER_AGENT, concat!("sessiongate/", env!("CARGO_PKG_VERSION")))
                        .header("x-sessiongate-timestamp", ts.to_string())
                        .header("x-sessiongate-event", event["type"].as_str().unwrap_or("alert"));
                    if let Some(s) = secret {
                        req = req.header(
                            "x-sessiongate-signature",
                            format!("sha256={}", signature(s.expose(), ts, body.as_bytes())),
                        );
                    }
                    let req = req.body(Full::new(Bytes::from(body))).map_err(|e| format!("invalid request: {e}"))?;
                    let res = self.client.request(req).await.map_err(|e| format!("{e}"))?;
                    let status = res.status();
                    let _ = res.into_body().collect().await;
                    if status.is_success() {
                        Ok(())
                    } else {
                        Err(format!("HTTP {}", status.as_u16()))
                    }
                }
                Resolved::Email { to, host, port, user, password, from, reply_to, tls } => {
                    send_email(
                        event,
                        dash,
                        to,
                        host,
                        *port,
                        user.as_deref(),
                        password.as_ref(),
                        from,
                        reply_to.as_deref(),
                        *tls,
                        timeout,
                    )
                    .await
                }
            }
        };
        tokio::time::timeout(timeout, work).await.unwrap_or_else(|_| Err(format!("timed out after {timeout:?}")))
    }
}

#[allow(clippy::too_many_arguments)]
async fn send_email(
    event: &Value,
    dash: Option<&str>,
    to: &[String],
    host: &str,
    port: Option<u16>,
    user: Option<&str>,
    password: Option<&Secret>,
    from: &str,
    reply_to: Option<&str>,
    tls: SmtpTls,
    timeout: Duration,
) -> Result<(), String> {
    use lettre::message::{header::ContentType, Mailbox, MultiPart, SinglePart};
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let parse = |a: &str| a.parse::<Mailbox>().map_err(|e| format!("address {a:?}: {e}"));
    let (text, html) = email_bodies(event, dash);
    let mut m = Message::builder().from(parse(from)?).subject(format!("[sessiongate] {}", field(&event["summary"])));
    for t in to {
        m = m.to(parse(t)?);
    }
    if let Some(r) = reply_to {
        m = m.reply_to(parse(r)?);
    }
    let msg = m
        .multipart(
            MultiPart::alternative()
                .singlepart(SinglePart::builder().header(ContentType::TEXT_PLAIN).body(text))
                .singlepart(SinglePart::builder().header(ContentType::TEXT_HTML).body(html)),
        )
        .map_err(|e| format!("message: {e}"))?;
    let builder = match tls {
        SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host).map_err(|e| e.to_string())?,
        SmtpTls::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host).map_err(|e| e.to_string())?,
        SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
    };
    let mut builder = builder.timeout(Some(timeout));
    if let Some(p) = port {
        builder = builder.port(p);
    }
    if let (Some(u), Some(p)) = (user, password) {
        builder = builder.credentials(Credentials::new(u.to_string(), String::from_utf8_lossy(p.expose()).to_string()));
    }
    builder.build().send(msg).await.map(drop).map_err(|e| format!("SMTP: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Value {
        json!({
            "type": "new_country", "title": "Login from a new country", "summary": "alice@example.com logged in from GB",
            "time": "2026-01-02T10:30:00.000Z", "user": {"id": "1", "username": "alice", "email": "alice@example.com"},
            "session": "sess_abc", "ip": "81.2.69.142", "geo": {"countryCode": "GB", "flag": "🇬🇧", "city": "London"},
            "flags": {"isVpn": true}, "score": 80,
        })
    }

    #[test]
    fn signature_is_hmac_sha256_over_timestamp_dot_body() {
        // Known answer, computed independently (Python: hmac.new(b"secret", b"1700000000.{}", sha256)).
        assert_eq!(
            signature(b"secret", 1_700_000_000, b"{}"),
            "b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163"
        );
        assert_ne!(signature(b"secret", 1_700_000_000, b"{}"), signature(b"secret", 1_700_000_001, b"{}"));
        assert_eq!(signature(b"key", 0, b"").len(), 64);
    }

    #[test]
    fn slack_has_fields_and_a_force_logout_button() {
        let p = slack_payload(&event(), Some("https://admin.example/sg"));
        let fields = p["blocks"][2]["fields"].as_array().expect("fields");
        let texts: Vec<&str> = fields.iter().filter_map(|f| f["text"].as_str()).collect();
        assert!(texts.contains(&"*User*\nalice@example.com") && texts.contains(&"*IP*\n81.2.69.142"));
        assert!(texts.contains(&"*Country*\n🇬🇧 GB, London") && texts.contains(&"*VPN*\nyes"));
        assert_eq!(p["blocks"][3]["elements"][0]["url"], "https://admin.example/sg/#/sessions/sess_abc");
        assert!(
            slack_payload(&event(), None)["blocks"].as_array().is_some_and(|b| b.len() == 3),
            "no button without a dashboard"
        );
    }

    #[test]
    fn discord_and_email_carry_the_same_fields() {
        let d = discord_payload(&event(), Some("https://a"));
        assert_eq!(d["embeds"][0]["fields"][0]["value"], "alice@example.com");
        assert_eq!(d["embeds"][0]["url"], "https://a/#/sessions/sess_abc");
        let (text, html) = email_bodies(&event(), Some("https://a"));
        assert!(text.contains("IP: 81.2.69.142") && text.contains("Force logout: https://a/#/sessions/sess_abc"));
        assert!(html.contains("<th align=\"left\">VPN</th><td>yes</td>"));
    }
}
