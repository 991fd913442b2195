//! Presets: the routes and extraction of a known backend, filled in where the file is silent.

use super::validate::V;
use super::*;

/// Fills what a preset defines where the file left a key unset, so a preset is exactly what a
/// user could have written by hand.
pub(super) fn apply_preset(raw: &mut RawConfig, v: &mut V<'_>) {
    let Some(name) = raw.preset.clone() else { return };
    match name.as_str() {
        "strapi-v5" => {
            let r = &mut raw.routes;
            let list = |xs: &[&str]| Some(xs.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            r.login.get_or_insert_with(|| {
                list(&["POST /api/auth/local", "POST /api/auth/local/register", "GET /api/auth/:provider/callback"])
                    .unwrap_or_default()
            });
            r.refresh.get_or_insert_with(|| list(&["POST /api/auth/refresh"]).unwrap_or_default());
            r.logout.get_or_insert_with(|| list(&["POST /api/auth/logout"]).unwrap_or_default());
            r.session_revoke.get_or_insert_with(|| list(&["DELETE /api/auth/sessions/:sessionId"]).unwrap_or_default());
            r.credential_change.get_or_insert_with(|| {
                list(&[
                    "POST /api/auth/change-password",
                    "POST /api/auth/reset-password",
                    "PUT /api/users/:id if /password",
                ])
                .unwrap_or_default()
            });
            let e = &mut raw.extract;
            let set = |slot: &mut Option<String>, val: &str| {
                slot.get_or_insert_with(|| val.to_string());
            };
            set(&mut e.access_token, "/jwt");
            set(&mut e.refresh_token, "/refreshToken");
            set(&mut e.refresh_cookie, "strapi_up_refresh");
            set(&mut e.user_id, "/user/id");
            set(&mut e.user_id_claim, "userId");
            set(&mut e.username, "/user/username");
            set(&mut e.email, "/user/email");
            set(&mut e.session_id_claim, "sessionId");
            set(&mut e.request_refresh_token, "/refreshToken");
            set(&mut e.request_device_id, "/deviceId");
            set(&mut e.request_identifier, "/identifier");
            set(&mut raw.upstream.health_path, "/_health");
            set(&mut e.logout_all, "/scope=all");
            set(&mut e.credential_user_param, "id");
            set(&mut e.refresh_precedence, "cookie");
            let b = &mut raw.backend;
            set(&mut b.error_shape, "strapi");
            set(&mut b.revoke_logout, "POST /api/auth/logout");
            set(&mut b.revoke_refresh, "POST /api/auth/refresh");
            b.body_formats.get_or_insert_with(|| list(&["json", "urlencoded", "multipart"]).unwrap_or_default());
            b.revoke_on_end.get_or_insert(true);
        }
        other => v.err("preset", format!("unknown preset {other:?} (known: \"strapi-v5\")")),
    }
}
