//! Route rules for the auth routes the gateway watches, and the path normalisation that makes
//! them hard to slip past.
//!
//! A rule must match *at least* every spelling of a path that the backend itself routes to the
//! same handler (Strapi: any letter case, one trailing slash, any query string). Matching a
//! superset is safe — a false match only adds a check — so paths are normalised generously:
//! percent-decoded, lower-cased, empty and `.` segments dropped, `..` resolved, trailing slashes
//! ignored.

use http::Method;
use std::borrow::Cow;

/// What the gateway does with a request, decided from its method and path alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteClass {
    Login,
    Refresh,
    Logout,
    CredentialChange,
    /// The backend's own "end this session" route (Strapi: `DELETE /api/auth/sessions/:id`).
    SessionRevoke,
    UserApi,
    Other,
}

// `COUNT` must follow the enum: `Other` is the last class.
const _: () = assert!(RouteClass::Other as usize + 1 == RouteClass::COUNT);

impl RouteClass {
    /// Number of classes; `class as usize` is below it (per-class metric series).
    pub const COUNT: usize = 7;

    /// Stable label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteClass::Login => "login",
            RouteClass::Refresh => "refresh",
            RouteClass::Logout => "logout",
            RouteClass::CredentialChange => "credential_change",
            RouteClass::SessionRevoke => "session_revoke",
            RouteClass::UserApi => "user_api",
            RouteClass::Other => "other",
        }
    }

    /// Auth routes have their request and response bodies buffered (with a cap) and inspected.
    pub fn is_auth(self) -> bool {
        matches!(
            self,
            RouteClass::Login
                | RouteClass::Refresh
                | RouteClass::Logout
                | RouteClass::CredentialChange
                | RouteClass::SessionRevoke
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

/// One rule: `METHOD /path/:param [if /json/pointer [!= value]] [for /json/pointer]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRule {
    pub class: RouteClass,
    pub method: Method,
    segments: Vec<Segment>,
    /// The rule applies only when the JSON request body satisfies this (e.g.
    /// `PUT /api/users/:id if /password`, `PATCH /users/:id if /status != active`).
    pub body_condition: Option<BodyCondition>,
    /// Where the body names the users the request acts on (`PATCH /users if /data/password for
    /// /keys`): a credential change ends their sessions, and one that names nobody there is
    /// refused.
    pub users: Option<String>,
    /// `reads /pointer`: this route's refresh-token field (see [`Suffix::refresh_at`]).
    pub refresh_at: Option<String>,
    pub source: String,
    path: String,
}

/// `if /pointer` (a value there, `null` included) or `if /pointer != text` (and not that
/// string). A `*` segment stands for every element of an array (or value of an object), and
/// the condition holds when it holds for one of them (`if /*/password`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyCondition {
    pub pointer: String,
    pub unless: Option<String>,
    /// `if /pointer == text`: exactly that string (OAuth2's `grant_type`).
    pub equals: Option<String>,
}

impl BodyCondition {
    /// Whether `json` satisfies the condition. `null`, and a value of another type than the
    /// string named by `!=`, satisfy it: a rule that ends sessions errs on the side of ending
    /// them (Directus tests `'status' in data`, so `{"status": null}` deactivates a user).
    pub fn holds(&self, json: Option<&serde_json::Value>) -> bool {
        let Some(json) = json else { return false };
        values_at(json, &self.pointer).into_iter().any(|v| {
            self.unless.as_deref().is_none_or(|u| v.as_str() != Some(u))
                && self.equals.as_deref().is_none_or(|e| v.as_str() == Some(e))
        })
    }
}

/// The values at a JSON pointer whose `*` segments expand to every element of an array or
/// value of an object (`/*/id` of `[{"id":1},{"id":2}]` is `[1, 2]`).
pub fn values_at<'a>(json: &'a serde_json::Value, pointer: &str) -> Vec<&'a serde_json::Value> {
    let mut here = vec![json];
    for seg in pointer.split('/').skip(1) {
        let mut next = Vec::new();
        for v in here {
            match (seg, v) {
                ("*", serde_json::Value::Array(xs)) => next.extend(xs.iter()),
                ("*", serde_json::Value::Object(m)) => next.extend(m.values()),
                (seg, v) => {
                    let key = seg.replace("~1", "/").replace("~0", "~");
                    let found = match v {
                        serde_json::Value::Object(m) => m.get(&key),
                        serde_json::Value::Array(xs) => key.parse::<usize>().ok().and_then(|i| xs.get(i)),
                        _ => None,
                    };
                    next.extend(found);
                }
            }
        }
        here = next;
    }
    here
}

/// The user ids at a pointer (`for /keys`): strings and numbers, alone or in an array.
pub fn users_at(json: Option<&serde_json::Value>, pointer: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut push = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) if !s.is_empty() => out.push(s.clone()),
        serde_json::Value::Number(n) => out.push(n.to_string()),
        _ => {}
    };
    for v in json.map(|j| values_at(j, pointer)).unwrap_or_default() {
        match v {
            serde_json::Value::Array(xs) => xs.iter().for_each(&mut push),
            v => push(v),
        }
    }
    out.sort();
    out.dedup();
    out
}

/// What the words after a rule's path or field say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Suffix {
    pub condition: Option<BodyCondition>,
    /// `for /pointer`: where the body names the users acted on.
    pub users: Option<String>,
    /// `reads /pointer`: where this route's body carries the refresh token, when it is not
    /// `extract.request_refresh_token` (RFC 7009 revocation: `/token`).
    pub refresh_at: Option<String>,
}

/// Parses `[if /ptr [!= value | == value]] [for /ptr] [reads /ptr]`.
pub fn parse_suffix(rest: &[&str]) -> Result<Suffix, String> {
    const EXPECTED: &str = "optionally followed by `if /pointer`, `if /pointer != value` or `if /pointer == value`, \
         then `for /pointer`, then `reads /pointer`";
    let mut out = Suffix::default();
    let mut words = rest;
    let pointer = |w: Option<&&str>, what: &str| match w {
        Some(p) if p.starts_with('/') => Ok(p.to_string()),
        _ => Err(format!("`{what}` takes a JSON pointer ({EXPECTED})")),
    };
    if let ["if", ptr, rest @ ..] = words {
        if !ptr.starts_with('/') {
            return Err(format!("`if` takes a JSON pointer ({EXPECTED})"));
        }
        let (unless, equals, rest) = match rest {
            ["!=", value, rest @ ..] => (Some(value.to_string()), None, rest),
            ["==", value, rest @ ..] => (None, Some(value.to_string()), rest),
            rest => (None, None, rest),
        };
        out.condition = Some(BodyCondition { pointer: ptr.to_string(), unless, equals });
        words = rest;
    }
    if let ["for", rest @ ..] = words {
        out.users = Some(pointer(rest.first(), "for")?);
        words = &rest[1..];
    }
    if let ["reads", rest @ ..] = words {
        out.refresh_at = Some(pointer(rest.first(), "reads")?);
        words = &rest[1..];
    }
    if !words.is_empty() {
        return Err(format!("expected {EXPECTED}"));
    }
    Ok(out)
}

/// A watched GraphQL mutation field: `auth_refresh`, `update_users_item if /data/password for
/// /id` (conditions and user pointers read the field's arguments as a JSON object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRule {
    pub class: RouteClass,
    pub field: String,
    pub condition: Option<BodyCondition>,
    pub users: Option<String>,
    pub source: String,
}

impl FieldRule {
    pub fn parse(class: RouteClass, text: &str) -> Result<FieldRule, String> {
        let mut words = text.split_whitespace();
        let field = words.next().ok_or("empty field rule")?;
        let name_ok = field.chars().next().is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
            && field.chars().all(|c| c == '_' || c.is_ascii_alphanumeric());
        if !name_ok {
            return Err(format!("{field:?} is not a GraphQL field name"));
        }
        let rest: Vec<&str> = words.collect();
        let Suffix { condition, users, refresh_at } = parse_suffix(&rest).map_err(|e| format!("`field`: {e}"))?;
        if refresh_at.is_some() {
            return Err(
                "`reads` is for route rules; a field's arguments are read by extract.request_refresh_token".into()
            );
        }
        Ok(FieldRule { class, field: field.to_string(), condition, users, source: text.to_string() })
    }
}

/// A successful match: the rule and the path parameters it captured.
#[derive(Debug, Clone)]
pub struct RouteMatch<'a> {
    pub rule: &'a RouteRule,
    pub params: Vec<(String, String)>,
}

impl RouteMatch<'_> {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

impl RouteRule {
    /// Parses `"POST /api/auth/local"` or `"PUT /api/users/:id if /password"`.
    pub fn parse(class: RouteClass, text: &str) -> Result<RouteRule, String> {
        let mut words = text.split_whitespace();
        let method = words.next().ok_or("empty route")?;
        let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
            .map_err(|_| format!("invalid method {method:?}"))?;
        let path = words.next().ok_or("missing path after the method")?;
        if !path.starts_with('/') {
            return Err(format!("path {path:?} must start with '/'"));
        }
        let rest: Vec<&str> = words.collect();
        let Suffix { condition: body_condition, users, refresh_at } =
            parse_suffix(&rest).map_err(|e| format!("`METHOD /path`: {e}"))?;
        let segments = normalize_path(path)
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| match s.strip_prefix(':') {
                Some(name) if !name.is_empty() => Segment::Param(name.to_string()),
                _ => Segment::Literal(s.to_string()),
            })
            .collect();
        Ok(RouteRule {
            class,
            method,
            segments,
            body_condition,
            users,
            refresh_at,
            source: text.to_string(),
            path: path.to_string(),
        })
    }

    /// The path as written in the rule (used when the gateway itself calls the route).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The names of the rule's `:param` segments, in order.
    pub fn param_names(&self) -> Vec<&str> {
        self.segments
            .iter()
            .filter_map(|s| match s {
                Segment::Param(p) => Some(p.as_str()),
                Segment::Literal(_) => None,
            })
            .collect()
    }

    /// Whether the rule matches a request at its path or below it (`router.use` mounting, as
    /// Directus mounts `/graphql/system`).
    pub fn matches_at_or_below(&self, method: &Method, normalized: &str) -> bool {
        if *method != self.method {
            return false;
        }
        let mut parts = normalized.split('/').filter(|s| !s.is_empty());
        self.segments.iter().all(|seg| match (seg, parts.next()) {
            (Segment::Literal(lit), Some(part)) => lit == part,
            (Segment::Param(_), Some(_)) => true,
            (_, None) => false,
        })
    }

    fn matches(&self, method: &Method, normalized: &str) -> Option<Vec<(String, String)>> {
        if *method != self.method {
            return None;
        }
        let mut params = Vec::new();
        let mut parts = normalized.split('/').filter(|s| !s.is_empty());
        for seg in &self.segments {
            let part = parts.next()?;
            match seg {
                Segment::Literal(lit) if lit == part => {}
                Segment::Literal(_) => return None,
                Segment::Param(name) => params.push((name.clone(), part.to_string())),
            }
        }
        parts.next().is_none().then_some(params)
    }
}

/// Normalises a request path for matching (see the module doc). Never fails: undecodable
/// percent-sequences are kept as they are.
pub fn normalize_path(path: &str) -> String {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let decoded: Cow<'_, str> = percent_encoding::percent_decode_str(path).decode_utf8().unwrap_or(Cow::Borrowed(path));
    let lower = decoded.to_lowercase();
    let mut out: Vec<&str> = Vec::new();
    // Backslashes are path separators for some backends; treat them as such so they cannot hide
    // a segment boundary.
    for seg in lower.split(['/', '\\']) {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut s = String::with_capacity(lower.len() + 1);
    for seg in out {
        s.push('/');
        s.push_str(seg);
    }
    if s.is_empty() {
        s.push('/');
    }
    s
}

/// The ordered list of watched routes.
#[derive(Debug, Clone, Default)]
pub struct Router {
    rules: Vec<RouteRule>,
}

impl Router {
    pub fn new(rules: Vec<RouteRule>) -> Self {
        Router { rules }
    }

    pub fn rules(&self) -> &[RouteRule] {
        &self.rules
    }

    /// Finds the first rule matching `method` and the (already normalised) `path`.
    pub fn find<'a>(&'a self, method: &Method, normalized: &str) -> Option<RouteMatch<'a>> {
        self.find_where(method, normalized, |_| true)
    }

    /// The first matching rule whose body condition `json` satisfies: rules of one path with
    /// different conditions (`… if /password`, `… if /status != active`) are tried in order.
    pub fn find_for_body<'a>(
        &'a self,
        method: &Method,
        normalized: &str,
        json: Option<&serde_json::Value>,
    ) -> Option<RouteMatch<'a>> {
        self.find_where(method, normalized, |r| r.body_condition.as_ref().is_none_or(|c| c.holds(json)))
    }

    fn find_where<'a>(
        &'a self,
        method: &Method,
        normalized: &str,
        accept: impl Fn(&RouteRule) -> bool,
    ) -> Option<RouteMatch<'a>> {
        self.rules
            .iter()
            .filter(|rule| accept(rule))
            .find_map(|rule| rule.matches(method, normalized).map(|params| RouteMatch { rule, params }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        Router::new(vec![
            RouteRule::parse(RouteClass::Refresh, "POST /api/auth/refresh").expect("rule"),
            RouteRule::parse(RouteClass::CredentialChange, "PUT /api/users/:id if /password").expect("rule"),
        ])
    }

    #[test]
    fn every_spelling_strapi_accepts_matches() {
        let r = router();
        for p in [
            "/api/auth/refresh",
            "/API/AUTH/REFRESH",
            "/Api/Auth/Refresh",
            "/api/auth/refresh/",
            "/api/auth/refresh?x=1",
            "/api/auth/refresh/?x=1#f",
        ] {
            assert!(r.find(&Method::POST, &normalize_path(p)).is_some(), "{p} must match");
        }
    }

    #[test]
    fn spellings_other_backends_may_accept_match_too() {
        let r = router();
        for p in [
            "/api//auth/refresh",
            "/api/auth/%72efresh",
            "/api/auth/./refresh",
            "/api/x/../auth/refresh",
            "/api/auth%2Frefresh",
            "/api\\auth\\refresh",
            "//api/auth/refresh//",
        ] {
            assert!(r.find(&Method::POST, &normalize_path(p)).is_some(), "{p} must match");
        }
    }

    #[test]
    fn other_paths_and_methods_do_not_match() {
        let r = router();
        assert!(r.find(&Method::GET, &normalize_path("/api/auth/refresh")).is_none());
        assert!(r.find(&Method::POST, &normalize_path("/api/auth/refreshx")).is_none());
        assert!(r.find(&Method::POST, &normalize_path("/api/auth/refresh/x")).is_none());
        assert!(r.find(&Method::POST, &normalize_path("/api/auth")).is_none());
    }

    #[test]
    fn params_are_captured() {
        let r = router();
        let m = r.find(&Method::PUT, &normalize_path("/api/users/42/")).expect("match");
        assert_eq!(m.param("id"), Some("42"));
        assert_eq!(m.rule.body_condition.as_ref().map(|c| c.pointer.as_str()), Some("/password"));
    }

    #[test]
    fn body_conditions_name_a_field_or_a_value_it_must_not_have() {
        let rule =
            RouteRule::parse(RouteClass::CredentialChange, "PATCH /users/:id if /status != active").expect("rule");
        let c = rule.body_condition.expect("condition");
        let holds = |v: serde_json::Value| c.holds(Some(&v));
        assert!(holds(serde_json::json!({"status": "suspended"})));
        assert!(holds(serde_json::json!({"status": 3})), "another type: erring on ending");
        assert!(!holds(serde_json::json!({"status": "active"})));
        assert!(holds(serde_json::json!({"status": null})), "Directus: `'status' in data`");
        assert!(!holds(serde_json::json!({"first_name": "x"})));
        assert!(!c.holds(None));
        let eq = RouteRule::parse(RouteClass::Login, "POST /oauth/token if /grant_type == password").expect("rule");
        let eq = eq.body_condition.expect("condition");
        assert!(eq.holds(Some(&serde_json::json!({"grant_type": "password"}))));
        assert!(!eq.holds(Some(&serde_json::json!({"grant_type": "refresh_token"}))));
        assert!(!eq.holds(Some(&serde_json::json!({"grant_type": null}))));
        assert!(!eq.holds(Some(&serde_json::json!({}))));
        for bad in
            ["PATCH /u if /status !=", "PATCH /u if /status = x", "PATCH /u if status != x", "PATCH /u unless /a"]
        {
            assert!(RouteRule::parse(RouteClass::CredentialChange, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn wildcards_and_user_pointers_read_batch_bodies() {
        let rule =
            RouteRule::parse(RouteClass::CredentialChange, "PATCH /users if /*/password for /*/id").expect("rule");
        let batch = serde_json::json!([{"id": "a", "first_name": "x"}, {"id": "b", "password": "p"}]);
        assert!(rule.body_condition.as_ref().expect("cond").holds(Some(&batch)));
        assert!(!rule.body_condition.as_ref().expect("cond").holds(Some(&serde_json::json!([{"id": "a"}]))));
        assert_eq!(users_at(Some(&batch), "/*/id"), vec!["a", "b"]);
        let keys = serde_json::json!({"keys": ["u2", 7, "u1", "u2", {"x": 1}], "data": {}});
        assert_eq!(users_at(Some(&keys), "/keys"), vec!["7", "u1", "u2"]);
        assert_eq!(users_at(Some(&keys), "/id"), Vec::<String>::new());
        assert_eq!(users_at(Some(&serde_json::json!({"id": "u9"})), "/id"), vec!["u9"]);
        let cond = RouteRule::parse(RouteClass::CredentialChange, "PATCH /users if /data/status != active for /keys")
            .expect("rule");
        assert_eq!(cond.users.as_deref(), Some("/keys"));
        let revoke = RouteRule::parse(RouteClass::Logout, "POST /oauth/revoke reads /token").expect("rule");
        assert_eq!(revoke.refresh_at.as_deref(), Some("/token"));
        for bad in [
            "PATCH /u for",
            "PATCH /u for keys",
            "PATCH /u for /a /b",
            "PATCH /u for /a if /b",
            "POST /r reads",
            "POST /r reads /t for /u",
        ] {
            assert!(RouteRule::parse(RouteClass::CredentialChange, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rules_of_one_path_are_tried_in_order_by_their_body_conditions() {
        let r = Router::new(vec![
            RouteRule::parse(RouteClass::CredentialChange, "PATCH /users/:id if /password").expect("rule"),
            RouteRule::parse(RouteClass::CredentialChange, "PATCH /users/:id if /status != active").expect("rule"),
        ]);
        let pick = |body: serde_json::Value| {
            r.find_for_body(&Method::PATCH, "/users/7", Some(&body)).and_then(|m| m.rule.body_condition.clone())
        };
        assert_eq!(pick(serde_json::json!({"password": "x"})).map(|c| c.pointer), Some("/password".into()));
        assert_eq!(pick(serde_json::json!({"status": "suspended"})).map(|c| c.pointer), Some("/status".into()));
        assert_eq!(pick(serde_json::json!({"status": "active"})), None);
        assert_eq!(
            r.find(&Method::PATCH, "/users/7").map(|m| m.rule.source.as_str()),
            Some("PATCH /users/:id if /password")
        );
    }

    #[test]
    fn bad_rules_are_rejected() {
        assert!(RouteRule::parse(RouteClass::Login, "").is_err());
        assert!(RouteRule::parse(RouteClass::Login, "POST").is_err());
        assert!(RouteRule::parse(RouteClass::Login, "POST api").is_err());
        assert!(RouteRule::parse(RouteClass::Login, "PO ST /a").is_err());
        assert!(RouteRule::parse(RouteClass::Login, "POST /a when /b").is_err());
    }
}
