//! `sessiongate rotate-key | import | export`: clients of the admin maintenance routes
//! (`admin::maintenance`), with progress bars on a terminal.

use crate::admin::client::{print, AdminClient, ClientError};
use crate::session::maintenance::{self, ImportRow};
use http::Method;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

/// Rows sent per import call.
const IMPORT_BATCH: usize = 500;

fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    let style = ProgressStyle::with_template(&format!("{{bar:40}} {{pos}}/{{len}} {what} ({{eta}} left)"))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    pb
}

/// Starts (or follows an already running) key rotation and shows its progress until it ends.
pub async fn rotate_key(c: &AdminClient, json: bool) -> Result<(), ClientError> {
    match c.json(Method::POST, "/magic-sessionmanager/keys/rotate", Some(json!({}))).await {
        Ok(_) | Err(ClientError::Api { status: 409, .. }) => {}
        Err(e) => return Err(e),
    }
    let pb = bar(0, "records");
    let status = loop {
        let v = c.json(Method::GET, "/magic-sessionmanager/keys", None).await?;
        let r = v["data"]["rotation"].clone();
        pb.set_length(r["total"].as_u64().unwrap_or(0));
        pb.set_position(r["scanned"].as_u64().unwrap_or(0));
        if r["state"] != "running" {
            pb.finish_and_clear();
            break v["data"].clone();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let r = &status["rotation"];
    if json {
        print(&format!("{status}\n"));
    } else {
        print(&format!(
            "key rotation {}: {} records scanned, {} re-sealed with key {}, {} token(s) unreadable\n",
            r["state"].as_str().unwrap_or("?"),
            r["scanned"],
            r["resealed"],
            r["key"].as_str().unwrap_or("?"),
            r["unreadable"]
        ));
        if r["unreadable"].as_u64().unwrap_or(0) > 0 {
            print("warning: some tokens were sealed with a key that is no longer configured; they cannot be re-sealed or used to revoke at the backend\n");
        } else if r["state"] == "done" {
            print("every stored token now uses the current key: previous keys can be removed from the configuration\n");
        }
    }
    match r["state"].as_str() {
        Some("done") => Ok(()),
        _ => {
            Err(ClientError::Other(format!("key rotation failed: {}", r["error"].as_str().unwrap_or("unknown error"))))
        }
    }
}

/// Rows of an import file: a JSON array (or `{"data": [...]}`, or one object per line) or a
/// CSV file with a header line. Each row is parsed on its own; errors name the row (1-based,
/// the CSV header not counted).
pub fn read_rows(format: &str, text: &str) -> Result<Vec<Result<ImportRow, Vec<String>>>, String> {
    match format {
        "csv" => {
            let mut r = csv::ReaderBuilder::new().flexible(false).from_reader(text.as_bytes());
            let headers = r.headers().map_err(|e| format!("CSV header: {e}"))?.clone();
            Ok(r.records()
                .map(|rec| match rec {
                    Ok(rec) => maintenance::parse_row(|names| {
                        names
                            .iter()
                            .find_map(|n| headers.iter().position(|h| h.trim() == *n))
                            .and_then(|i| rec.get(i).map(str::to_string))
                    }),
                    Err(e) => Err(vec![format!("unreadable CSV record: {e}")]),
                })
                .collect())
        }
        "json" => {
            // A whole document (an array, or {"data": [...]} however it is laid out), else one
            // object per line.
            let values: Vec<Value> = match serde_json::from_str::<Value>(text) {
                Ok(Value::Array(a)) => a,
                Ok(Value::Object(mut o)) => match o.remove("data") {
                    Some(Value::Array(a)) => a,
                    Some(other) => {
                        o.insert("data".into(), other);
                        vec![Value::Object(o)]
                    }
                    None => vec![Value::Object(o)],
                },
                Ok(_) => return Err("JSON: expected an array, {\"data\": [...]} or one object per line".into()),
                Err(e) if text.trim_start().starts_with('[') => return Err(format!("JSON: {e}")),
                Err(_) => text
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| serde_json::from_str(l).unwrap_or(Value::Null))
                    .collect(),
            };
            Ok(values
                .iter()
                .map(|v| match v {
                    Value::Object(_) => maintenance::parse_row(|names| {
                        names.iter().find_map(|n| v.get(*n)).and_then(maintenance::json_text)
                    }),
                    _ => Err(vec!["not a JSON object".to_string()]),
                })
                .collect())
        }
        other => Err(format!("--format: expected json or csv, got {other:?}")),
    }
}

/// Imports a file through the admin API in batches. Invalid rows are reported and skipped;
/// rows already imported are counted as existing, so a fixed file can simply be run again.
pub async fn import(c: &AdminClient, json: bool, format: &str, file: &Path) -> Result<(), ClientError> {
    let text = std::fs::read_to_string(file).map_err(|e| ClientError::Other(format!("{}: {e}", file.display())))?;
    let rows = read_rows(format, &text).map_err(|e| ClientError::Other(format!("{}: {e}", file.display())))?;
    let mut invalid: Vec<(usize, Vec<String>)> = Vec::new();
    let mut valid: Vec<(usize, ImportRow)> = Vec::new();
    for (i, r) in rows.into_iter().enumerate() {
        match r {
            Ok(row) => valid.push((i + 1, row)),
            Err(errors) => invalid.push((i + 1, errors)),
        }
    }
    let pb = bar(valid.len() as u64, "rows");
    let (mut created, mut exists) = (0usize, 0usize);
    for chunk in valid.chunks(IMPORT_BATCH) {
        let body = json!({"rows": chunk.iter().map(|(_, r)| r).collect::<Vec<_>>()});
        let v = c.json(Method::POST, "/magic-sessionmanager/import", Some(body)).await?;
        for ((line, _), outcome) in chunk.iter().zip(v["data"].as_array().cloned().unwrap_or_default()) {
            match outcome["status"].as_str() {
                Some("created") => created += 1,
                Some("exists") => exists += 1,
                _ => invalid.push((
                    *line,
                    outcome["errors"]
                        .as_array()
                        .map(|a| a.iter().filter_map(|e| e.as_str().map(str::to_string)).collect())
                        .unwrap_or_else(|| vec!["refused by the gateway".to_string()]),
                )),
            }
        }
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    invalid.sort_by_key(|(line, _)| *line);
    if json {
        let errors: Vec<Value> = invalid.iter().map(|(row, e)| json!({"row": row, "errors": e})).collect();
        print(&format!(
            "{}\n",
            json!({"created": created, "exists": exists, "invalid": invalid.len(), "errors": errors})
        ));
    } else {
        for (row, errors) in &invalid {
            eprintln!("row {row}: {}", errors.join("; "));
        }
        print(&format!("{created} session(s) imported, {exists} already present, {} invalid row(s)\n", invalid.len()));
    }
    if invalid.is_empty() {
        Ok(())
    } else {
        Err(ClientError::Other(format!("{} row(s) were not imported (see above)", invalid.len())))
    }
}

/// Writes every stored session (no tokens) as CSV or JSON lines.
pub async fn export(c: &AdminClient, format: &str, output: Option<&Path>) -> Result<(), ClientError> {
    let path = format!("/magic-sessionmanager/export?format={}", crate::admin::client::enc(format));
    download(c, &path, output).await
}

/// Streams a GET answer into `output` (or standard output) as it arrives, in bounded memory.
pub async fn download(c: &AdminClient, path: &str, output: Option<&Path>) -> Result<(), ClientError> {
    match output {
        Some(file) => {
            let f = std::fs::File::create(file).map_err(|e| ClientError::Other(format!("{}: {e}", file.display())))?;
            let mut w = std::io::BufWriter::new(f);
            c.call_into(Method::GET, path, None, &mut w).await?;
            std::io::Write::flush(&mut w).map_err(|e| ClientError::Other(format!("{}: {e}", file.display())))
        }
        None => c.call_into(Method::GET, path, None, &mut std::io::stdout()).await,
    }
}

#[cfg(test)]
mod tests {
    use super::read_rows;

    const ROW: &str = r#"{"userId": "7", "ip": "203.0.113.7", "token": "a.b.c", "createdAt": "1000"}"#;

    #[test]
    fn json_imports_read_arrays_data_wrappers_and_lines_however_laid_out() {
        let pretty = format!("{{\n  \"data\": [\n    {ROW},\n    {ROW}\n  ]\n}}\n");
        for (text, rows) in
            [(format!("[{ROW}, {ROW}]"), 2), (pretty, 2), (format!("{ROW}\n\n{ROW}\n{ROW}\n"), 3), (ROW.to_string(), 1)]
        {
            let parsed = read_rows("json", &text).expect("readable");
            assert_eq!(parsed.len(), rows, "{text}");
            assert!(parsed.iter().all(Result::is_ok), "{text}");
        }
        assert!(read_rows("json", "[{\"userId\": ").is_err(), "a broken array is one clear error");
        let lines = read_rows("json", &format!("{ROW}\nnot json\n")).expect("lines");
        assert_eq!((lines[0].is_ok(), lines[1].is_err()), (true, true), "a bad line is that row's error");
    }
}
