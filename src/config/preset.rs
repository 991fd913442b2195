//! Presets: the routes and extraction of a known backend, filled in where the file is silent.

use super::validate::V;
use super::*;

fn list(xs: &[&str]) -> Vec<String> {
    xs.iter().map(|s| s.to_string()).collect()
}

fn set(slot: &mut Option<String>, val: &str) {
    slot.get_or_insert_with(|| val.to_string());
}

/// Directus 11 (`shared/directus-11.md`): REST and `/graphql/system` auth, its three token
/// transports and modes, and every user change that must end sessions because Directus's own
/// tokens outlive it (a password, a status other than `active`, a role, a deletion; one user,
/// a batch by key or by item; a batch by filter names nobody and is refused).
fn directus(raw: &mut RawConfig) {
    let r = &mut raw.routes;
    r.login.get_or_insert_with(|| list(&["POST /auth/login"]));
    r.refresh.get_or_insert_with(|| list(&["POST /auth/refresh"]));
    r.logout.get_or_insert_with(|| list(&["POST /auth/logout"]));
    r.credential_change.get_or_insert_with(|| {
        let mut rules = Vec::new();
        // `/users/me` first: `/users/:id` would take `me` for an id.
        for field in ["/password", "/status != active", "/role"] {
            rules.push(format!("PATCH /users/me if {field}"));
        }
        for field in ["/password", "/status != active", "/role"] {
            rules.push(format!("PATCH /users/:id if {field}"));
        }
        // `PATCH /users`: `{keys, data}`, an array of items, or `{query, data}` (refused: `for /keys`
        // names nobody).
        for field in ["password", "status != active", "role"] {
            rules.push(format!("PATCH /users if /data/{field} for /keys"));
        }
        for field in ["password", "status != active", "role"] {
            rules.push(format!("PATCH /users if /*/{field} for /*/id"));
        }
        rules.push("DELETE /users/:id".into());
        rules.push("DELETE /users if /keys for /keys".into());
        rules.push("DELETE /users for /*".into());
        rules
    });
    let g = &mut raw.graphql;
    g.endpoints.get_or_insert_with(|| list(&["POST /graphql/system"]));
    g.login.get_or_insert_with(|| list(&["auth_login"]));
    g.refresh.get_or_insert_with(|| list(&["auth_refresh"]));
    g.logout.get_or_insert_with(|| list(&["auth_logout"]));
    g.credential_change.get_or_insert_with(|| {
        let mut rules = Vec::new();
        for field in ["password", "status != active", "role"] {
            rules.push(format!("update_users_me if /data/{field}"));
            rules.push(format!("update_users_item if /data/{field} for /id"));
            rules.push(format!("update_users_items if /data/{field} for /ids"));
            rules.push(format!("update_users_batch if /data/*/{field} for /data/*/id"));
        }
        rules.push("delete_users_item for /id".into());
        rules.push("delete_users_items for /ids".into());
        rules
    });
    set(&mut g.result_at, "/data");
    set(&mut g.default_mode, "json");
    let e = &mut raw.extract;
    set(&mut e.access_token, "/data/access_token");
    set(&mut e.refresh_token, "/data/refresh_token");
    set(&mut e.user_id_claim, "id");
    set(&mut e.request_refresh_token, "/refresh_token");
    set(&mut e.request_identifier, "/email");
    set(&mut e.refresh_cookie, "directus_refresh_token");
    set(&mut e.access_cookie, "directus_session_token");
    set(&mut e.access_query, "access_token");
    set(&mut e.refresh_claim, "session");
    set(&mut e.refresh_precedence, "body");
    set(&mut e.refresh_mode, "/mode");
    set(&mut e.credential_user_param, "id");
    set(&mut raw.upstream.health_path, "/server/health");
    let b = &mut raw.backend;
    set(&mut b.error_shape, "directus");
    set(&mut b.revoke_logout, "POST /auth/logout");
    set(&mut b.revoke_refresh, "POST /auth/refresh");
    b.body_formats.get_or_insert_with(|| list(&["json"]));
    b.body_methods.get_or_insert_with(|| list(&["POST", "PUT", "PATCH", "DELETE"]));
    b.revoke_on_end.get_or_insert(true);
}

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
        "directus" => directus(raw),
        other => v.err("preset", format!("unknown preset {other:?} (known: \"strapi-v5\", \"directus\")")),
    }
}
