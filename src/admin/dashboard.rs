//! The admin dashboard: static files embedded in the binary, served on the admin port.
//!
//! The files carry no data; everything they show comes from the admin JSON API, called with the
//! admin token in an `Authorization` header (never a cookie, so cross-site requests cannot ride
//! on it). The Content-Security-Policy allows only this origin's own scripts and styles — no
//! inline code, no third-party hosts.

use crate::error::{full, Body};
use http::{header, HeaderValue, Response, StatusCode};

struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const ASSETS: &[Asset] = &[
    Asset { path: "", content_type: "text/html; charset=utf-8", body: include_str!("dashboard/index.html") },
    Asset { path: "app.js", content_type: "text/javascript; charset=utf-8", body: include_str!("dashboard/app.js") },
    Asset { path: "i18n.js", content_type: "text/javascript; charset=utf-8", body: include_str!("dashboard/i18n.js") },
    Asset { path: "app.css", content_type: "text/css; charset=utf-8", body: include_str!("dashboard/app.css") },
    Asset { path: "favicon.svg", content_type: "image/svg+xml", body: include_str!("dashboard/favicon.svg") },
];

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `/dashboard` → redirect; `/dashboard/<file>` → the file, or 404; other paths → `None`.
pub fn serve(segs: &[&str], path_has_slash: bool) -> Option<Response<Body>> {
    match segs {
        ["dashboard"] if !path_has_slash => {
            let mut res = Response::new(full(""));
            *res.status_mut() = StatusCode::MOVED_PERMANENTLY;
            res.headers_mut().insert(header::LOCATION, HeaderValue::from_static("/dashboard/"));
            Some(res)
        }
        ["dashboard", rest @ ..] => {
            let name = rest.join("/");
            let Some(asset) = ASSETS.iter().find(|a| a.path == name || (a.path.is_empty() && name == "index.html"))
            else {
                let mut res = Response::new(full("not found"));
                *res.status_mut() = StatusCode::NOT_FOUND;
                return Some(res);
            };
            let mut res = Response::new(full(asset.body));
            let h = res.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
            h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
            h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
            h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
            h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
            // Small files, revalidated each time, so an upgrade is picked up at once.
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            Some(res)
        }
        _ => None,
    }
}
