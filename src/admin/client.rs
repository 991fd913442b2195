//! The `sessiongate sessions|users|audit` subcommands: thin clients of the admin API. Human
//! tables by default, the API's JSON with `--json`.

use bytes::Bytes;
use http::{header, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::io::Write;

pub struct AdminClient {
    base: String,
    token: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the admin API at {0}: {1}")]
    Connect(String, String),
    #[error("admin API answered {status}: {message}")]
    Api { status: u16, message: String },
    #[error("{0}")]
    Other(String),
}

/// The URL that reaches a listener bound to `addr` from the same host (a wildcard address is
/// reached on loopback).
pub fn local_url(addr: std::net::SocketAddr) -> String {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::IpAddr::from([127, 0, 0, 1]),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", std::net::SocketAddr::new(ip, addr.port()))
}

/// Everything but RFC 3986 unreserved characters is escaped.
const COMPONENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Percent-encodes a query value or path segment.
pub fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, COMPONENT).to_string()
}

impl AdminClient {
    pub fn new(base: &str, token: String) -> AdminClient {
        AdminClient {
            base: base.trim_end_matches('/').to_string(),
            token,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Sends a request; returns the body of a 2xx answer.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Bytes, ClientError> {
        let mut out = Vec::new();
        self.call_into(method, path, body, &mut out).await?;
        Ok(Bytes::from(out))
    }

    /// Sends a request and streams the body of a 2xx answer into `out` as it arrives (exports
    /// of any size in bounded memory).
    pub async fn call_into(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        out: &mut dyn Write,
    ) -> Result<(), ClientError> {
        let url = format!("{}{}", self.base, path);
        let req = Request::builder()
            .method(method)
            .uri(&url)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body.map(|b| Bytes::from(b.to_string())).unwrap_or_default()))
            .map_err(|e| ClientError::Other(format!("invalid request {url}: {e}")))?;
        let res = self.client.request(req).await.map_err(|e| ClientError::Connect(self.base.clone(), e.to_string()))?;
        let status = res.status().as_u16();
        let mut body = res.into_body();
        if (200..300).contains(&status) {
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| ClientError::Connect(self.base.clone(), e.to_string()))?;
                if let Some(chunk) = frame.data_ref() {
                    out.write_all(chunk).map_err(|e| ClientError::Other(format!("writing the answer: {e}")))?;
                }
            }
            return Ok(());
        }
        let bytes =
            body.collect().await.map_err(|e| ClientError::Connect(self.base.clone(), e.to_string()))?.to_bytes();
        {
            let message = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).to_string());
            Err(ClientError::Api { status, message })
        }
    }

    pub async fn json(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, ClientError> {
        let bytes = self.call(method, path, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Other(format!("admin API sent invalid JSON: {e}")))
    }
}

/// Renders rows as an aligned text table.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 < cells.len() {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            } else {
                s.push_str(c);
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(x) => x.clone(),
        other => other.to_string(),
    }
}

fn status(v: &Value) -> String {
    if v["isActive"] != true {
        format!("ended ({})", s(&v["endReason"]))
    } else if v["isTrulyActive"] == true {
        "active".into()
    } else {
        "inactive".into()
    }
}

/// Table of admin session objects.
pub fn sessions_table(data: &[Value]) -> String {
    let rows: Vec<Vec<String>> = data
        .iter()
        .map(|v| {
            vec![
                s(&v["id"]),
                s(&v["sessionId"]),
                format!("{} ({})", s(&v["userId"]), s(&v["user"]["username"])),
                s(&v["ipAddress"]),
                format!("{} / {} / {}", s(&v["deviceType"]), s(&v["browserName"]), s(&v["osName"])),
                s(&v["loginTime"]),
                s(&v["lastActive"]),
                status(v),
            ]
        })
        .collect();
    table(&["ID", "SESSION", "USER", "IP", "DEVICE", "LOGIN", "LAST ACTIVE", "STATUS"], &rows)
}

/// Writes `text` to stdout, ignoring a closed pipe (`| head`).
pub fn print(text: &str) {
    let _ = std::io::stdout().write_all(text.as_bytes());
}

#[cfg(test)]
mod tests {
    #[test]
    fn table_aligns_columns() {
        let t = super::table(&["A", "LONG"], &[vec!["xyz".into(), "1".into()], vec!["q".into(), "22".into()]]);
        assert_eq!(t, "A    LONG\nxyz  1\nq    22\n");
    }
}
