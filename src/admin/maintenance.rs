//! Admin maintenance routes: online key rotation (a background job with progress), session
//! import from another session store, and session export. The CLI's `rotate-key`, `import`
//! and `export` are clients of these.

use super::{json, ok, AdminState};
use crate::audit::{Event, Kind};
use crate::clock::iso;
use crate::error::{Body, GatewayError};
use crate::session::maintenance::{self, ImportOutcome, ImportRow};
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Records re-sealed per batch (one locked, durable write each).
const ROTATION_BATCH: usize = 500;
/// Rows accepted per import call.
pub const MAX_IMPORT_ROWS: usize = 1000;

/// Progress of the latest key rotation on this instance.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rotation {
    /// `idle` (never run since start), `running`, `done` or `failed`.
    pub state: &'static str,
    pub total: usize,
    pub scanned: usize,
    pub resealed: usize,
    /// Tokens sealed with a key that is no longer configured: they cannot be re-sealed.
    pub unreadable: usize,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub error: Option<String>,
    /// The key everything is being sealed with.
    pub key: String,
}

#[derive(Default)]
pub struct Jobs {
    rotation: Arc<Mutex<Rotation>>,
}

impl Jobs {
    fn rotation(&self) -> Rotation {
        let mut r = crate::sync::lock(&self.rotation).clone();
        if r.state.is_empty() {
            r.state = "idle";
        }
        r
    }
}

/// `GET /magic-sessionmanager/keys`: the key ids in use (never the keys) and the rotation.
pub fn keys(st: &AdminState) -> Response<Body> {
    let ring = st.app.sessions.keyring();
    ok(json!({"data": {
        "currentKey": ring.current_kid(),
        "keys": ring.kids(),
        "rotation": st.jobs.rotation(),
    }}))
}

/// `POST /magic-sessionmanager/keys/rotate`: starts re-sealing every stored token with the
/// current key, in the background; 202 with the progress, 409 while one is running.
pub fn rotate(st: &AdminState, actor: &str) -> Result<Response<Body>, GatewayError> {
    let sessions = st.app.sessions.clone();
    let status = {
        let mut r = crate::sync::lock(&st.jobs.rotation);
        if r.state == "running" {
            return Err(GatewayError::Conflict("A key rotation is already running"));
        }
        *r = Rotation {
            state: "running",
            total: sessions.index().len().0,
            started_at: Some(iso(crate::clock::now_ms())),
            key: sessions.keyring().current_kid().to_string(),
            ..Default::default()
        };
        r.clone()
    };
    st.app
        .audit
        .record(Event::new(Kind::KeyRotation).actor(actor).details(json!({"state": "started", "key": status.key})));
    let (progress, app, actor) = (st.jobs.rotation.clone(), st.app.clone(), actor.to_string());
    tokio::spawn(async move {
        let mut after = 0u64;
        let result = loop {
            match sessions.reseal_batch(after, ROTATION_BATCH).await {
                Err(e) => break Err(e.to_string()),
                Ok(b) => {
                    let mut r = crate::sync::lock(&progress);
                    r.scanned += b.scanned;
                    r.resealed += b.resealed;
                    r.unreadable += b.unreadable;
                    r.total = r.total.max(r.scanned);
                    match b.last_id {
                        Some(id) => after = id,
                        None => break Ok(()),
                    }
                }
            }
        };
        let done = {
            let mut r = crate::sync::lock(&progress);
            r.finished_at = Some(iso(crate::clock::now_ms()));
            match result {
                Ok(()) => r.state = "done",
                Err(e) => {
                    r.state = "failed";
                    r.error = Some(e);
                }
            }
            r.clone()
        };
        tracing::info!(
            state = done.state,
            resealed = done.resealed,
            unreadable = done.unreadable,
            "key rotation finished"
        );
        app.audit.record(Event::new(Kind::KeyRotation).actor(&actor).details(json!({
            "state": done.state, "key": done.key, "scanned": done.scanned,
            "resealed": done.resealed, "unreadable": done.unreadable,
        })));
    });
    Ok(json(StatusCode::ACCEPTED, json!({"data": status})))
}

/// `POST /magic-sessionmanager/import` with `{"rows": [ … ]}`: each row is validated again here
/// and answered with its own outcome, in order.
pub async fn import(st: &AdminState, body: &Value, actor: &str) -> Result<Response<Body>, GatewayError> {
    let rows =
        body.get("rows").and_then(Value::as_array).ok_or(GatewayError::BadRequest("body must be {\"rows\": [ … ]}"))?;
    if rows.len() > MAX_IMPORT_ROWS {
        return Err(GatewayError::InvalidParameter(format!("rows: at most {MAX_IMPORT_ROWS} per call")));
    }
    let mut outcomes: Vec<Option<ImportOutcome>> = Vec::with_capacity(rows.len());
    let mut valid: Vec<ImportRow> = Vec::new();
    for row in rows {
        match maintenance::parse_row(|names| names.iter().find_map(|n| row.get(*n)).and_then(maintenance::json_text)) {
            Ok(r) => {
                valid.push(r);
                outcomes.push(None);
            }
            Err(errors) => outcomes.push(Some(ImportOutcome::Invalid { errors })),
        }
    }
    let mut written = st.app.sessions.import(valid).await?.into_iter();
    let outcomes: Vec<ImportOutcome> =
        outcomes.into_iter().map(|o| o.or_else(|| written.next()).unwrap_or(ImportOutcome::Exists)).collect();
    let count = |f: fn(&ImportOutcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
    let created = count(|o| matches!(o, ImportOutcome::Created { .. }));
    let meta = json!({
        "created": created,
        "exists": count(|o| matches!(o, ImportOutcome::Exists)),
        "invalid": count(|o| matches!(o, ImportOutcome::Invalid { .. })),
    });
    if created > 0 {
        st.app.audit.record(Event::new(Kind::Import).actor(actor).details(meta.clone()));
    }
    Ok(ok(json!({"data": outcomes, "meta": meta})))
}

/// Columns of the export, in the import's field names where one exists. Tokens are never
/// exported.
pub const EXPORT_COLUMNS: [&str; 16] = [
    "id",
    "sessionId",
    "documentId",
    "userId",
    "username",
    "email",
    "ip",
    "userAgent",
    "createdAt",
    "lastSeen",
    "isActive",
    "endedAt",
    "endReason",
    "deviceType",
    "country",
    "threatScore",
];

fn export_row(r: &crate::store::SessionRecord) -> Vec<Value> {
    vec![
        json!(r.id),
        json!(r.sid),
        json!(r.document_id),
        json!(r.user_id),
        json!(r.username),
        json!(r.email),
        json!(r.ip),
        json!(r.user_agent),
        json!(iso(r.login_time)),
        json!(iso(r.last_active)),
        json!(r.logout_time.is_none()),
        json!(r.logout_time.map(iso)),
        json!(r.end_reason),
        json!(r.device_type),
        json!(r.geo.as_ref().and_then(|g| g.country.clone())),
        json!(r.threat_score),
    ]
}

/// `GET /magic-sessionmanager/export?format=json|csv`: every stored session, streamed in id
/// order (JSON: one object per line).
pub fn export(st: &AdminState, q: &BTreeMap<String, String>) -> Result<Response<Body>, GatewayError> {
    let csv = match q.get("format").map(String::as_str) {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(GatewayError::InvalidParameter(format!("format: expected json or csv, got {other:?}")))
        }
    };
    let sessions = st.app.sessions.clone();
    struct S {
        after: u64,
        header: bool,
        done: bool,
    }
    let init = S { after: 0, header: csv, done: false };
    let stream = futures_util::stream::unfold(init, move |mut s| {
        let sessions = sessions.clone();
        async move {
            if s.done {
                return None;
            }
            if std::mem::take(&mut s.header) {
                return Some((Ok(Bytes::from(csv_line(EXPORT_COLUMNS.iter().map(|c| c.to_string())))), s));
            }
            let batch = match sessions.store().scan(s.after, 1000).await {
                Ok(b) => b,
                Err(e) => return Some((Err(std::io::Error::other(e.to_string())), S { done: true, ..s })),
            };
            let last = batch.last()?;
            s.after = last.id;
            let mut out = String::new();
            for r in &batch {
                // The record's last-active time is written lazily; the index has the latest.
                let mut r = r.clone();
                if let Some(live) = sessions.live(r.id) {
                    r.last_active = r.last_active.max(sessions.last_active(&live));
                }
                let row = export_row(&r);
                if csv {
                    out.push_str(&csv_line(row.iter().map(|v| maintenance::json_text(v).unwrap_or_default())));
                } else {
                    let obj: serde_json::Map<String, Value> =
                        EXPORT_COLUMNS.iter().map(|c| c.to_string()).zip(row).collect();
                    out.push_str(&Value::Object(obj).to_string());
                    out.push('\n');
                }
            }
            Some((Ok(Bytes::from(out)), s))
        }
    });
    let mut res = Response::new(super::stream_body(stream));
    let (ctype, name) =
        if csv { ("text/csv; charset=utf-8", "sessions.csv") } else { ("application/x-ndjson", "sessions.ndjson") };
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        res.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

/// One CSV line: RFC 4180 quoting by the csv crate, formula-looking cells neutralized as in the
/// audit export.
fn csv_line(fields: impl Iterator<Item = String>) -> String {
    let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(Vec::new());
    let fields: Vec<String> = fields.map(|f| crate::audit::csv_safe(&f).into_owned()).collect();
    let _ = w.write_record(&fields);
    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
}
