//! GraphQL endpoints whose mutations are auth routes (Directus's `POST /graphql/system`:
//! `auth_login`, `auth_refresh`, `auth_logout`, `update_users_*`). The only module that touches
//! the GraphQL parser (`apollo-parser`).
//!
//! A request there is read the way graphql-js and Directus read it, and what cannot be read
//! that way is refused (400 `unreadable_graphql`), never passed:
//! - the body is a JSON object; `query` a string; `variables` an object (or absent);
//!   `operationName` a string (falsy values count as absent, as `|| null` makes them);
//! - the operation that runs is chosen as `getOperationAST` and `execute` choose it: the one
//!   named, else the only one; with none chosen nothing runs and nothing is watched;
//! - the root fields of a mutation are flattened through fragment spreads and inline
//!   fragments; a watched field under a directive (`@skip`, `@include`: whether it runs would
//!   depend on evaluation) or two watched fields in one operation are refused;
//! - a watched field's arguments become a JSON object (variables substituted, defaults
//!   applied, enum values as strings), which the rule's `if` / `for` and the `[extract]`
//!   pointers read as they read a REST body.

use crate::config::GraphqlConfig;
use crate::error::GatewayError;
use crate::routes::{FieldRule, RouteClass};
use apollo_parser::cst::{self, CstNode};
use serde_json::{Map, Value};
use std::collections::HashMap;

/// More tokens than Directus's default `GRAPHQL_QUERY_TOKEN_LIMIT` (5 000), so that every
/// document it parses is parsed here too; bounded, so a huge one costs little.
const TOKEN_LIMIT: usize = 50_000;
/// Nesting of selection sets and values the parser follows.
const RECURSION_LIMIT: usize = 256;
/// Fragments spread inside fragments, followed at most this deep (a cycle is a validation
/// error in GraphQL; here it is refused).
const MAX_SPREAD_DEPTH: usize = 32;

/// The watched mutation field a GraphQL request runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Watched<'a> {
    pub rule: &'a FieldRule,
    /// The field's key in the answer's `data` (its alias, else its name).
    pub key: String,
    /// Its arguments, as a JSON object.
    pub args: Value,
}

impl Watched<'_> {
    pub fn class(&self) -> RouteClass {
        self.rule.class
    }
}

fn unreadable(why: &'static str) -> GatewayError {
    GatewayError::UnreadableGraphql(why)
}

/// JavaScript truthiness of a JSON value (`body.query || null`).
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// Reads a GraphQL request body (already parsed JSON): the watched field it runs, if any.
pub fn read<'a>(cfg: &'a GraphqlConfig, body: Option<&Value>) -> Result<Option<Watched<'a>>, GatewayError> {
    let Some(body) = body else { return Ok(None) };
    let obj = body.as_object().ok_or_else(|| unreadable("a GraphQL request body must be a JSON object"))?;
    let query = match obj.get("query") {
        Some(Value::String(q)) if !q.is_empty() => q.as_str(),
        Some(v) if truthy(v) => return Err(unreadable("the GraphQL query must be a string")),
        _ => return Err(unreadable("the GraphQL request has no query")),
    };
    let empty = Map::new();
    let variables = match obj.get("variables") {
        Some(Value::Object(m)) => m,
        Some(v) if truthy(v) => return Err(unreadable("GraphQL variables must be a JSON object")),
        _ => &empty,
    };
    let operation_name = match obj.get("operationName") {
        Some(Value::String(s)) if !s.is_empty() => Some(s.as_str()),
        Some(v) if truthy(v) => return Err(unreadable("the GraphQL operationName must be a string")),
        _ => None,
    };
    let tree = apollo_parser::Parser::new(query).token_limit(TOKEN_LIMIT).recursion_limit(RECURSION_LIMIT).parse();
    if tree.errors().next().is_some() {
        return Err(unreadable("the GraphQL query does not parse"));
    }
    let doc = tree.document();
    let mut operations = Vec::new();
    let mut fragments: HashMap<String, cst::FragmentDefinition> = HashMap::new();
    for def in doc.definitions() {
        match def {
            cst::Definition::OperationDefinition(op) => operations.push(op),
            cst::Definition::FragmentDefinition(f) => {
                let name = f.fragment_name().and_then(|n| n.name()).map(|n| n.text().to_string());
                let name = name.ok_or_else(|| unreadable("a GraphQL fragment has no name"))?;
                if fragments.insert(name, f).is_some() {
                    return Err(unreadable("two GraphQL fragments of one name"));
                }
            }
            _ => return Err(unreadable("a GraphQL request may hold only operations and fragments")),
        }
    }
    let name_of = |op: &cst::OperationDefinition| op.name().map(|n| n.text().to_string());
    let mut names: Vec<String> = operations.iter().filter_map(name_of).collect();
    names.sort();
    if names.windows(2).any(|w| w[0] == w[1]) {
        return Err(unreadable("two GraphQL operations of one name"));
    }
    let chosen = match operation_name {
        Some(wanted) => operations.iter().find(|op| name_of(op).as_deref() == Some(wanted)),
        None if operations.len() == 1 => operations.first(),
        None => None,
    };
    let Some(op) = chosen else { return Ok(None) };
    // `{ … }` shorthand has no operation type: it is a query.
    let is_mutation = op.operation_type().is_some_and(|t| t.mutation_token().is_some());
    if !is_mutation {
        return Ok(None);
    }
    let defaults = variable_defaults(op)?;
    let vars = Vars { given: variables, defaults: &defaults };
    let mut found = Vec::new();
    let root = op.selection_set().ok_or_else(|| unreadable("a GraphQL operation has no selection set"))?;
    let directed = op.directives().is_some_and(|d| d.directives().next().is_some());
    collect(&root, &fragments, directed, 0, &mut found)?;
    let mut watched = None;
    for (field, under_directive) in found {
        let name = field.name().map(|n| n.text().to_string()).unwrap_or_default();
        if !cfg.fields.iter().any(|r| r.field == name) {
            continue;
        }
        if under_directive {
            return Err(unreadable("a watched GraphQL mutation under a directive"));
        }
        let args = arguments(&field, &vars)?;
        let Some(rule) =
            cfg.fields.iter().find(|r| r.field == name && r.condition.as_ref().is_none_or(|c| c.holds(Some(&args))))
        else {
            continue;
        };
        if watched.is_some() {
            return Err(unreadable("two watched GraphQL mutations in one operation"));
        }
        let key = field.alias().and_then(|a| a.name()).map(|n| n.text().to_string()).unwrap_or(name);
        watched = Some(Watched { rule, key, args });
    }
    Ok(watched)
}

/// The root fields of a selection set, through spreads and inline fragments, each with
/// whether a directive decides whether it runs.
fn collect(
    set: &cst::SelectionSet,
    fragments: &HashMap<String, cst::FragmentDefinition>,
    directed: bool,
    depth: usize,
    out: &mut Vec<(cst::Field, bool)>,
) -> Result<(), GatewayError> {
    if depth > MAX_SPREAD_DEPTH {
        return Err(unreadable("GraphQL fragments nest too deep"));
    }
    let has = |d: Option<cst::Directives>| d.is_some_and(|d| d.directives().next().is_some());
    for sel in set.selections() {
        match sel {
            cst::Selection::Field(f) => {
                let d = directed || has(f.directives());
                out.push((f, d));
            }
            cst::Selection::InlineFragment(i) => {
                let inner = i.selection_set().ok_or_else(|| unreadable("an inline fragment has no selection set"))?;
                collect(&inner, fragments, directed || has(i.directives()), depth + 1, out)?;
            }
            cst::Selection::FragmentSpread(s) => {
                let name = s.fragment_name().and_then(|n| n.name()).map(|n| n.text().to_string()).unwrap_or_default();
                let frag =
                    fragments.get(&name).ok_or_else(|| unreadable("a GraphQL fragment spread names no fragment"))?;
                let inner = frag.selection_set().ok_or_else(|| unreadable("a fragment has no selection set"))?;
                let d = directed || has(s.directives()) || has(frag.directives());
                collect(&inner, fragments, d, depth + 1, out)?;
            }
        }
    }
    Ok(())
}

/// Variables as given in the request, and the operation's defaults.
struct Vars<'a> {
    given: &'a Map<String, Value>,
    defaults: &'a Map<String, Value>,
}

impl Vars<'_> {
    fn get(&self, name: &str) -> Option<&Value> {
        self.given.get(name).or_else(|| self.defaults.get(name))
    }
}

fn variable_defaults(op: &cst::OperationDefinition) -> Result<Map<String, Value>, GatewayError> {
    let mut out = Map::new();
    let none = Map::new();
    let no_vars = Vars { given: &none, defaults: &none };
    for def in op.variable_definitions().iter().flat_map(|d| d.variable_definitions()) {
        let Some(name) = def.variable().and_then(|v| v.name()).map(|n| n.text().to_string()) else {
            return Err(unreadable("a GraphQL variable has no name"));
        };
        if let Some(v) = def.default_value().and_then(|d| d.value()) {
            // Defaults are constants: a variable in one is a syntax error the parser reported.
            if let Some(v) = value(&v, &no_vars)? {
                out.insert(name, v);
            }
        }
    }
    Ok(out)
}

/// A field's arguments as a JSON object; an argument given an absent variable is absent.
fn arguments(field: &cst::Field, vars: &Vars<'_>) -> Result<Value, GatewayError> {
    let mut out = Map::new();
    for arg in field.arguments().iter().flat_map(|a| a.arguments()) {
        let name = arg.name().map(|n| n.text().to_string()).unwrap_or_default();
        let v = arg.value().ok_or_else(|| unreadable("a GraphQL argument has no value"))?;
        if out.contains_key(&name) {
            return Err(unreadable("a GraphQL argument given twice"));
        }
        if let Some(v) = value(&v, vars)? {
            out.insert(name, v);
        }
    }
    Ok(Value::Object(out))
}

/// A GraphQL value as JSON: `None` for a variable that was not given and has no default.
fn value(v: &cst::Value, vars: &Vars<'_>) -> Result<Option<Value>, GatewayError> {
    let text = |node: &dyn CstNode| node.syntax().text().to_string();
    Ok(Some(match v {
        cst::Value::Variable(var) => {
            let name = var.name().map(|n| n.text().to_string()).unwrap_or_default();
            return Ok(vars.get(&name).cloned());
        }
        cst::Value::StringValue(s) => Value::String(String::from(s)),
        cst::Value::IntValue(i) => {
            let t = text(i);
            match t.parse::<i64>() {
                Ok(n) => Value::from(n),
                Err(_) => return Err(unreadable("a GraphQL integer out of range")),
            }
        }
        cst::Value::FloatValue(f) => {
            let n = text(f).parse::<f64>().map_err(|_| unreadable("a GraphQL float that does not parse"))?;
            serde_json::Number::from_f64(n).map(Value::Number).unwrap_or(Value::Null)
        }
        cst::Value::BooleanValue(b) => Value::Bool(b.true_token().is_some()),
        cst::Value::NullValue(_) => Value::Null,
        cst::Value::EnumValue(e) => Value::String(e.name().map(|n| n.text().to_string()).unwrap_or_default()),
        cst::Value::ListValue(l) => {
            let mut items = Vec::new();
            for item in l.values() {
                items.push(value(&item, vars)?.unwrap_or(Value::Null));
            }
            Value::Array(items)
        }
        cst::Value::ObjectValue(o) => {
            let mut m = Map::new();
            for f in o.object_fields() {
                let name = f.name().map(|n| n.text().to_string()).unwrap_or_default();
                if m.contains_key(&name) {
                    return Err(unreadable("a GraphQL input object with a field given twice"));
                }
                let fv = f.value().ok_or_else(|| unreadable("a GraphQL input field has no value"))?;
                if let Some(fv) = value(&fv, vars)? {
                    m.insert(name, fv);
                }
            }
            Value::Object(m)
        }
    }))
}

/// The REST-shaped answer a login or refresh field's result stands for: the field's value in
/// `data` put at `result_at`, so the `[extract]` pointers read it. `None` when the field
/// answered `null` (an error: the mutation did nothing).
pub fn result_as_rest(cfg: &GraphqlConfig, key: &str, answer: &Value) -> Option<Value> {
    let result = answer.get("data")?.get(key)?;
    if result.is_null() {
        return None;
    }
    let mut out = result.clone();
    for seg in cfg.result_at.split('/').skip(1).collect::<Vec<_>>().into_iter().rev() {
        let mut m = Map::new();
        m.insert(seg.replace("~1", "/").replace("~0", "~"), out);
        out = Value::Object(m);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg() -> GraphqlConfig {
        let rule = |c, t: &str| FieldRule::parse(c, t).expect("rule");
        GraphqlConfig {
            endpoints: Vec::new(),
            fields: vec![
                rule(RouteClass::Login, "auth_login"),
                rule(RouteClass::Refresh, "auth_refresh"),
                rule(RouteClass::Logout, "auth_logout"),
                rule(RouteClass::CredentialChange, "update_users_item if /data/password for /id"),
                rule(RouteClass::CredentialChange, "update_users_item if /data/status != active for /id"),
            ],
            result_at: "/data".into(),
            default_mode: None,
        }
    }

    fn watched(body: Value) -> Result<Option<(RouteClass, String, Value)>, &'static str> {
        let c = cfg();
        match read(&c, Some(&body)) {
            Ok(w) => Ok(w.map(|w| (w.class(), w.key.clone(), w.args.clone()))),
            Err(e) => Err(e.reason()),
        }
    }

    #[test]
    fn mutations_are_found_through_aliases_fragments_and_variables() {
        let q = |query: &str, variables: Value| watched(json!({"query": query, "variables": variables}));
        assert_eq!(
            q(r#"mutation { auth_refresh(refresh_token: "r\u0031", mode: json) { access_token } }"#, json!(null)),
            Ok(Some((RouteClass::Refresh, "auth_refresh".into(), json!({"refresh_token": "r1", "mode": "json"}))))
        );
        assert_eq!(
            q("mutation M($t: String = \"d\") { x: auth_logout(refresh_token: $t) }", json!({})),
            Ok(Some((RouteClass::Logout, "x".into(), json!({"refresh_token": "d"}))))
        );
        assert_eq!(
            q("mutation($t: String) { ...F } fragment F on Mutation { ... on Mutation { y: auth_refresh(refresh_token: $t) { expires } } }", json!({"t": "v"})),
            Ok(Some((RouteClass::Refresh, "y".into(), json!({"refresh_token": "v"}))))
        );
        assert_eq!(
            q("mutation($t: String) { auth_refresh(refresh_token: $t) { expires } }", json!({})),
            Ok(Some((RouteClass::Refresh, "auth_refresh".into(), json!({}))))
        );
        assert_eq!(
            q(r#"mutation { update_users_item(id: "u1", data: {password: """p"""}) { id } }"#, json!(null)),
            Ok(Some((
                RouteClass::CredentialChange,
                "update_users_item".into(),
                json!({"id": "u1", "data": {"password": "p"}})
            )))
        );
        // Not a credential change: no password, an active status.
        assert_eq!(
            q(r#"mutation { update_users_item(id: "u1", data: {status: active}) { id } }"#, json!(null)),
            Ok(None)
        );
        assert_eq!(
            q(r#"mutation { update_users_item(id: "u1", data: {status: "suspended"}) { id } }"#, json!(null))
                .map(|w| w.map(|w| w.0)),
            Ok(Some(RouteClass::CredentialChange))
        );
    }

    #[test]
    fn the_operation_that_runs_is_the_one_read() {
        let two = "query A { users_me { id } } mutation B { auth_logout(refresh_token: \"t\") }";
        assert_eq!(watched(json!({"query": two})), Ok(None), "no name, two operations: nothing runs");
        assert_eq!(watched(json!({"query": two, "operationName": "A"})), Ok(None));
        assert_eq!(
            watched(json!({"query": two, "operationName": "B"})).map(|w| w.map(|w| w.1)),
            Ok(Some("auth_logout".into()))
        );
        assert_eq!(watched(json!({"query": two, "operationName": "C"})), Ok(None));
        assert_eq!(watched(json!({"query": two, "operationName": ""})), Ok(None), "'' || null");
        assert_eq!(
            watched(json!({"query": "{ auth_login(email: \"a\", password: \"b\") { expires } }"})),
            Ok(None),
            "a query"
        );
    }

    #[test]
    fn what_cannot_be_read_is_refused() {
        for body in [
            json!([{"query": "mutation { auth_logout }"}]),
            json!({"query": 5}),
            json!({"query": ""}),
            json!({}),
            json!({"query": "mutation { auth_logout(refresh_token: \"t\") "}),
            json!({"query": "mutation { auth_logout(refresh_token: \"t\") }", "variables": "x"}),
            json!({"query": "mutation { auth_logout(refresh_token: \"t\") }", "operationName": 1}),
            json!({"query": "mutation A { a: auth_logout } mutation A { b: auth_logout }", "operationName": "A"}),
            json!({"query": "mutation { auth_logout(refresh_token: \"t\") @skip(if: true) }"}),
            json!({"query": "mutation { ... @include(if: false) { auth_logout(refresh_token: \"t\") } }"}),
            json!({"query": "mutation { ...F } fragment F on Mutation @skip(if: true) { auth_logout }"}),
            json!({"query": "mutation { a: auth_logout(refresh_token: \"t\") b: auth_refresh(refresh_token: \"u\") { expires } }"}),
            json!({"query": "mutation { ...F } fragment F on Mutation { ...F }"}),
            json!({"query": "mutation { ...G }"}),
            json!({"query": "mutation { auth_logout(refresh_token: \"t\", refresh_token: \"u\") }"}),
            json!({"query": "type T { a: Int } mutation { auth_logout }"}),
        ] {
            assert_eq!(watched(body.clone()), Err("unreadable_graphql"), "{body}");
        }
        // An unwatched field under a directive is not the gateway's business.
        assert_eq!(watched(json!({"query": "mutation { create_items(x: 1) @skip(if: true) { id } }"})), Ok(None));
    }

    #[test]
    fn a_result_is_put_where_the_rest_pointers_read() {
        let c = cfg();
        let answer = json!({"data": {"x": {"access_token": "a", "refresh_token": "r", "expires": "900000"}}});
        assert_eq!(
            result_as_rest(&c, "x", &answer),
            Some(json!({"data": {"access_token": "a", "refresh_token": "r", "expires": "900000"}}))
        );
        assert_eq!(result_as_rest(&c, "x", &json!({"data": {"x": null}, "errors": []})), None);
        assert_eq!(result_as_rest(&c, "y", &answer), None);
    }
}
