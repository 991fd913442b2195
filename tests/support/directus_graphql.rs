//! The look-alike's `POST /graphql/system`, as Directus 11.3.5 runs it (`middleware/graphql.js`,
//! `services/graphql/index.js`, graphql-js 16):
//! - `query = body.query || null` (none: 400 `INVALID_PAYLOAD`), `variables = body.variables ||
//!   null`, `operationName = body.operationName || null`; a parse error is 400
//!   `GRAPHQL_VALIDATION`, and so is what validation rejects (unknown root fields, unknown
//!   fragments or directives, two operations of one name, an anonymous operation among others);
//! - the operation runs as `execute` picks it (named, else the only one; else an error with
//!   HTTP 200 and no data); root fields are collected through fragments with `@skip` and
//!   `@include` evaluated, and mutations run one after the other;
//! - `auth_login` (mode default `json`), `auth_refresh` and `auth_logout` (mode default `json`;
//!   `json` reads the argument only, `cookie` the refresh cookie only, `session` the session
//!   cookie's claim), `update_users_me`, `update_users_item`, `update_users_items`,
//!   `update_users_batch`, `delete_users_item`, `delete_users_items`, and the query `users_me`;
//! - a failing field is `null` with an entry in `errors` (`extensions.code`, `path`), HTTP 200.
//!
//! It reads with the `graphql-parser` crate, not the gateway's `apollo-parser`, so a reading the
//! two parsers shared by mistake would not be tested against itself.

use super::*;
use graphql_parser::query::{self as q, Definition, OperationDefinition, Selection};

type Doc<'a> = q::Document<'a, String>;
type GqlValue<'a> = q::Value<'a, String>;

const MUTATIONS: &[&str] = &[
    "auth_login",
    "auth_refresh",
    "auth_logout",
    "auth_password_request",
    "auth_password_reset",
    "update_users_me",
    "update_users_item",
    "update_users_items",
    "update_users_batch",
    "delete_users_item",
    "delete_users_items",
    "create_articles_item",
];

fn validation(message: &str) -> Response<Full<Bytes>> {
    error(400, "GRAPHQL_VALIDATION", message, Value::Null)
}

/// A failed field: its message and code, at its path.
struct FieldError {
    message: String,
    code: String,
}

impl FieldError {
    fn from_response(r: Response<Full<Bytes>>) -> FieldError {
        // The REST handlers answer errors in Directus's shape; GraphQL carries the same code.
        let body = futures_body(r);
        let e = &body["errors"][0];
        FieldError {
            message: e["message"].as_str().unwrap_or("error").to_string(),
            code: e["extensions"]["code"].as_str().unwrap_or("INTERNAL_SERVER_ERROR").to_string(),
        }
    }
}

/// The JSON of a mock response (its body is a `Full`, available at once).
fn futures_body(r: Response<Full<Bytes>>) -> Value {
    use http_body_util::BodyExt;
    let fut = r.into_body().collect();
    let bytes =
        futures_util::FutureExt::now_or_never(fut).and_then(|r| r.ok()).map(|c| c.to_bytes()).unwrap_or_default();
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

pub(super) fn execute(
    st: &mut MockState,
    headers: &HeaderMap,
    query: Option<&str>,
    body: &Value,
) -> Response<Full<Bytes>> {
    let text = match &body["query"] {
        Value::String(s) if !s.is_empty() => s.clone(),
        v if truthy(v) => return validation("Body must be a string."),
        _ => return invalid_payload("Must provide query string"),
    };
    let variables = match &body["variables"] {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    let operation_name = match &body["operationName"] {
        v if truthy(v) => Some(v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())),
        _ => None,
    };
    let doc: Doc<'_> = match q::parse_query::<String>(&text) {
        Ok(d) => d,
        Err(e) => return validation(&format!("Syntax Error: {e}")),
    };
    if let Err(r) = validate(&doc) {
        return r;
    }
    let ops: Vec<&OperationDefinition<'_, String>> = doc
        .definitions
        .iter()
        .filter_map(|d| match d {
            Definition::Operation(o) => Some(o),
            Definition::Fragment(_) => None,
        })
        .collect();
    let chosen = match &operation_name {
        Some(n) => ops.iter().find(|o| op_name(o) == Some(n.as_str())).copied(),
        None if ops.len() == 1 => ops.first().copied(),
        None => None,
    };
    let Some(op) = chosen else {
        let message = match operation_name {
            Some(n) => format!("Unknown operation named \"{n}\"."),
            None => "Must provide operation name if query contains multiple operations.".into(),
        };
        return json_res(200, json!({"errors": [{"message": message}]}));
    };
    let (is_mutation, defs, set) = match op {
        OperationDefinition::Mutation(m) => (true, m.variable_definitions.as_slice(), &m.selection_set),
        OperationDefinition::Query(qd) => (false, qd.variable_definitions.as_slice(), &qd.selection_set),
        OperationDefinition::SelectionSet(s) => (false, &[][..], s),
        OperationDefinition::Subscription(_) => return validation("Subscriptions are not served here."),
    };
    let mut vars = variables;
    for d in defs {
        if !vars.contains_key(&d.name) {
            if let Some(v) = &d.default_value {
                vars.insert(d.name.clone(), to_json(v, &Map::new()));
            }
        }
    }
    let fragments: HashMap<&str, &q::FragmentDefinition<'_, String>> = doc
        .definitions
        .iter()
        .filter_map(|d| match d {
            Definition::Fragment(f) => Some((f.name.as_str(), f)),
            Definition::Operation(_) => None,
        })
        .collect();
    let mut fields = Vec::new();
    collect(set, &fragments, &vars, &mut fields);
    let mut data = Map::new();
    let mut errors = Vec::new();
    let mut cookies = Vec::new();
    for f in fields {
        let key = f.alias.clone().unwrap_or_else(|| f.name.clone());
        if data.contains_key(&key) {
            continue; // merged with the field of the same key
        }
        let args: Map<String, Value> =
            f.arguments.iter().filter_map(|(k, v)| arg(v, &vars).map(|v| (k.clone(), v))).collect();
        let result = if is_mutation {
            mutation(st, headers, query, &f.name, &args, &mut cookies)
        } else {
            read_field(st, headers, query, &f.name)
        };
        match result {
            Ok(v) => {
                data.insert(key, select(v, &f.selection_set));
            }
            Err(e) => {
                data.insert(key.clone(), Value::Null);
                errors.push(json!({"message": e.message, "extensions": {"code": e.code}, "path": [key]}));
            }
        }
    }
    let mut out = json!({ "data": data });
    if !errors.is_empty() {
        out["errors"] = Value::Array(errors);
    }
    let mut r = json_res(200, out);
    for c in cookies {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    r
}

/// Only the selected subfields of an object (or of each object of a list), by response key.
fn select(v: Value, set: &q::SelectionSet<'_, String>) -> Value {
    let fields: Vec<&q::Field<'_, String>> = set
        .items
        .iter()
        .filter_map(|s| match s {
            Selection::Field(f) => Some(f),
            _ => None,
        })
        .collect();
    if fields.is_empty() {
        return v;
    }
    match v {
        Value::Object(m) => Value::Object(
            fields
                .iter()
                .map(|f| {
                    let key = f.alias.clone().unwrap_or_else(|| f.name.clone());
                    (key, m.get(&f.name).cloned().unwrap_or(Value::Null))
                })
                .collect(),
        ),
        Value::Array(xs) => Value::Array(xs.into_iter().map(|x| select(x, set)).collect()),
        other => other,
    }
}

fn op_name<'a>(op: &'a OperationDefinition<'_, String>) -> Option<&'a str> {
    match op {
        OperationDefinition::Query(q) => q.name.as_deref(),
        OperationDefinition::Mutation(m) => m.name.as_deref(),
        OperationDefinition::Subscription(s) => s.name.as_deref(),
        OperationDefinition::SelectionSet(_) => None,
    }
}

/// The validation rules that matter here (graphql-js `specifiedRules`, in part).
fn validate(doc: &Doc<'_>) -> Result<(), Response<Full<Bytes>>> {
    let mut names = Vec::new();
    let mut anonymous = 0;
    let mut ops = 0;
    let mut fragments = HashMap::new();
    for d in &doc.definitions {
        match d {
            Definition::Operation(o) => {
                ops += 1;
                match op_name(o) {
                    Some(n) if names.contains(&n) => {
                        return Err(validation(&format!("There can be only one operation named \"{n}\".")))
                    }
                    Some(n) => names.push(n),
                    None => anonymous += 1,
                }
            }
            Definition::Fragment(f) => {
                if fragments.insert(f.name.as_str(), f).is_some() {
                    return Err(validation(&format!("There can be only one fragment named \"{}\".", f.name)));
                }
            }
        }
    }
    if anonymous > 0 && ops > 1 {
        return Err(validation("This anonymous operation must be the only defined operation."));
    }
    for d in &doc.definitions {
        if let Definition::Operation(o) = d {
            let (set, root_is_mutation) = match o {
                OperationDefinition::Mutation(m) => (&m.selection_set, true),
                OperationDefinition::Query(q) => (&q.selection_set, false),
                OperationDefinition::SelectionSet(s) => (s, false),
                OperationDefinition::Subscription(s) => (&s.selection_set, false),
            };
            check_root(set, &fragments, root_is_mutation, 0)?;
        }
    }
    Ok(())
}

fn check_directives(ds: &[q::Directive<'_, String>]) -> Result<(), Response<Full<Bytes>>> {
    for d in ds {
        if d.name != "skip" && d.name != "include" {
            return Err(validation(&format!("Unknown directive \"@{}\".", d.name)));
        }
    }
    Ok(())
}

fn check_root(
    set: &q::SelectionSet<'_, String>,
    fragments: &HashMap<&str, &q::FragmentDefinition<'_, String>>,
    mutation: bool,
    depth: usize,
) -> Result<(), Response<Full<Bytes>>> {
    if depth > 16 {
        return Err(validation("Cannot spread fragment within itself."));
    }
    for sel in &set.items {
        match sel {
            Selection::Field(f) => {
                check_directives(&f.directives)?;
                let known = if mutation {
                    MUTATIONS.contains(&f.name.as_str())
                } else {
                    ["users_me", "__typename"].contains(&f.name.as_str())
                };
                if !known && f.name != "__typename" {
                    let t = if mutation { "Mutation" } else { "Query" };
                    return Err(validation(&format!("Cannot query field \"{}\" on type \"{t}\".", f.name)));
                }
            }
            Selection::InlineFragment(i) => {
                check_directives(&i.directives)?;
                check_root(&i.selection_set, fragments, mutation, depth + 1)?;
            }
            Selection::FragmentSpread(s) => {
                check_directives(&s.directives)?;
                let Some(f) = fragments.get(s.fragment_name.as_str()) else {
                    return Err(validation(&format!("Unknown fragment \"{}\".", s.fragment_name)));
                };
                check_directives(&f.directives)?;
                check_root(&f.selection_set, fragments, mutation, depth + 1)?;
            }
        }
    }
    Ok(())
}

/// `@skip(if:)` / `@include(if:)`, with variables.
fn included(ds: &[q::Directive<'_, String>], vars: &Map<String, Value>) -> bool {
    let cond = |d: &q::Directive<'_, String>| {
        d.arguments
            .iter()
            .find(|(k, _)| k == "if")
            .map(|(_, v)| to_json(v, vars))
            .and_then(|v| v.as_bool())
            .unwrap_or(false)
    };
    ds.iter().all(|d| match d.name.as_str() {
        "skip" => !cond(d),
        "include" => cond(d),
        _ => true,
    })
}

/// graphql-js `collectFields` for the root type.
fn collect<'a>(
    set: &'a q::SelectionSet<'a, String>,
    fragments: &HashMap<&str, &'a q::FragmentDefinition<'a, String>>,
    vars: &Map<String, Value>,
    out: &mut Vec<&'a q::Field<'a, String>>,
) {
    for sel in &set.items {
        match sel {
            Selection::Field(f) if included(&f.directives, vars) => out.push(f),
            Selection::InlineFragment(i) if included(&i.directives, vars) => {
                collect(&i.selection_set, fragments, vars, out)
            }
            Selection::FragmentSpread(s) if included(&s.directives, vars) => {
                if let Some(f) = fragments.get(s.fragment_name.as_str()) {
                    collect(&f.selection_set, fragments, vars, out);
                }
            }
            _ => {}
        }
    }
}

fn to_json(v: &GqlValue<'_>, vars: &Map<String, Value>) -> Value {
    match v {
        q::Value::Variable(n) => vars.get(n).cloned().unwrap_or(Value::Null),
        q::Value::Int(n) => n.as_i64().map(Value::from).unwrap_or(Value::Null),
        q::Value::Float(f) => serde_json::Number::from_f64(*f).map(Value::Number).unwrap_or(Value::Null),
        q::Value::String(s) => Value::String(s.clone()),
        q::Value::Boolean(b) => Value::Bool(*b),
        q::Value::Null => Value::Null,
        q::Value::Enum(e) => Value::String(e.clone()),
        q::Value::List(xs) => Value::Array(xs.iter().map(|x| to_json(x, vars)).collect()),
        q::Value::Object(m) => Value::Object(m.iter().map(|(k, x)| (k.clone(), to_json(x, vars))).collect()),
    }
}

/// An argument's value; an argument given an absent variable is absent.
fn arg(v: &GqlValue<'_>, vars: &Map<String, Value>) -> Option<Value> {
    match v {
        q::Value::Variable(n) => vars.get(n).cloned(),
        other => Some(to_json(other, vars)),
    }
}

/// A list argument (`[ID]`): a single value is coerced to a list of one, as GraphQL does.
fn list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(xs)) => xs.iter().map(id_text).collect(),
        Some(Value::Null) | None => Vec::new(),
        Some(one) => vec![id_text(one)],
    }
}

fn field_error(message: &str, code: &str) -> FieldError {
    FieldError { message: message.into(), code: code.into() }
}

fn who(st: &mut MockState, headers: &HeaderMap, query: Option<&str>) -> Result<String, FieldError> {
    match st.authenticate(headers, query) {
        Ok(Who::User(id)) => Ok(id),
        Ok(Who::Anonymous) => Err(field_error("You don't have permission to access this.", "FORBIDDEN")),
        Err(r) => Err(FieldError::from_response(r)),
    }
}

/// A REST answer's `data` as a field's value, its cookies kept for the GraphQL answer.
fn rest_data(r: Response<Full<Bytes>>, cookies: &mut Vec<http::HeaderValue>) -> Result<Value, FieldError> {
    if !r.status().is_success() {
        return Err(FieldError::from_response(r));
    }
    cookies.extend(r.headers().get_all(header::SET_COOKIE).iter().cloned());
    Ok(futures_body(r).get("data").cloned().unwrap_or(Value::Null))
}

/// `AuthTokens`: every field present, `expires` a BigInt (a string).
fn tokens(data: Value) -> Value {
    json!({
        "access_token": data.get("access_token").cloned().unwrap_or(Value::Null),
        "refresh_token": data.get("refresh_token").cloned().unwrap_or(Value::Null),
        "expires": data.get("expires").map(|e| Value::String(id_text(e))).unwrap_or(Value::Null),
    })
}

/// The REST body whose mode selection reads what the resolver reads (the mode defaults to
/// `json`, which reads only the argument).
fn resolver_body(args: &Map<String, Value>) -> Value {
    let mode = args.get("mode").and_then(Value::as_str).unwrap_or("json");
    let mut b = json!({ "mode": mode });
    if mode == "json" {
        b["refresh_token"] = args.get("refresh_token").cloned().unwrap_or(Value::Null);
    }
    b
}

fn mutation(
    st: &mut MockState,
    headers: &HeaderMap,
    query: Option<&str>,
    name: &str,
    args: &Map<String, Value>,
    cookies: &mut Vec<http::HeaderValue>,
) -> Result<Value, FieldError> {
    match name {
        "auth_login" => {
            let mut b = Value::Object(args.clone());
            if b.get("mode").is_none() {
                b["mode"] = json!("json");
            }
            rest_data(st.login(&b), cookies).map(tokens)
        }
        "auth_refresh" => {
            let b = resolver_body(args);
            if b["mode"] == "json" && !truthy(&b["refresh_token"]) {
                return Err(field_error(
                    "The refresh token is required in either the payload or cookie",
                    "INVALID_PAYLOAD",
                ));
            }
            rest_data(st.refresh(headers, &b), cookies).map(tokens)
        }
        "auth_logout" => {
            let b = resolver_body(args);
            if b["mode"] == "json" && !truthy(&b["refresh_token"]) {
                return Err(field_error(
                    "The refresh token is required in either the payload or cookie",
                    "INVALID_PAYLOAD",
                ));
            }
            rest_data(st.logout(headers, &b), cookies).map(|_| Value::Bool(true))
        }
        "update_users_me" => {
            let me = who(st, headers, query)?;
            st.update_user(&me, &me, args.get("data").unwrap_or(&Value::Null)).map_err(FieldError::from_response)
        }
        "update_users_item" => {
            let me = who(st, headers, query)?;
            let id = args.get("id").map(id_text).unwrap_or_default();
            st.update_user(&me, &id, args.get("data").unwrap_or(&Value::Null)).map_err(FieldError::from_response)
        }
        "update_users_items" => {
            let me = who(st, headers, query)?;
            let data = args.get("data").cloned().unwrap_or(Value::Null);
            let mut out = Vec::new();
            for id in list(args.get("ids")) {
                out.push(st.update_user(&me, &id, &data).map_err(FieldError::from_response)?);
            }
            Ok(Value::Array(out))
        }
        "update_users_batch" => {
            let me = who(st, headers, query)?;
            let items = args.get("data").and_then(Value::as_array).cloned().unwrap_or_default();
            let mut out = Vec::new();
            for item in items {
                let id = id_text(&item["id"]);
                if id.is_empty() {
                    return Err(field_error("Primary key is missing", "INVALID_PAYLOAD"));
                }
                out.push(st.update_user(&me, &id, &item).map_err(FieldError::from_response)?);
            }
            Ok(Value::Array(out))
        }
        "delete_users_item" => {
            let me = who(st, headers, query)?;
            let id = args.get("id").map(id_text).unwrap_or_default();
            st.delete_user(&me, &id).map_err(FieldError::from_response)?;
            Ok(json!({ "id": id }))
        }
        "delete_users_items" => {
            let me = who(st, headers, query)?;
            let ids = list(args.get("ids"));
            for id in &ids {
                st.delete_user(&me, id).map_err(FieldError::from_response)?;
            }
            Ok(json!({ "ids": ids }))
        }
        _ => Err(field_error("Not modelled by the look-alike.", "INTERNAL_SERVER_ERROR")),
    }
}

fn read_field(st: &mut MockState, headers: &HeaderMap, query: Option<&str>, name: &str) -> Result<Value, FieldError> {
    match name {
        "users_me" => {
            let me = who(st, headers, query)?;
            let u = st
                .user_by_id(&me)
                .cloned()
                .ok_or_else(|| field_error("Invalid user credentials.", "INVALID_CREDENTIALS"))?;
            Ok(json!({"id": u.id, "email": u.email, "status": u.status}))
        }
        "__typename" => Ok(json!("Query")),
        _ => Err(field_error("Not modelled by the look-alike.", "INTERNAL_SERVER_ERROR")),
    }
}
