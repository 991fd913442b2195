//! Reading and writing the backend's fields: JSON pointers into bodies, `Set-Cookie` values.
//! Shared by the request path (client bodies), the session layer (login and refresh answers)
//! and the gateway's own backend calls.

use http::HeaderMap;
use serde_json::Value;

/// The value a response sets for cookie `name` (`Set-Cookie`, RFC 6265 §4.1). An emptied cookie
/// (a logout clearing it) counts as absent.
pub fn set_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(http::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next()?.trim().split_once('='))
        .filter(|(k, v)| *k == name && !v.is_empty())
        .map(|(_, v)| v.trim_matches('"').to_string())
        .next_back()
}

/// A string (or number, rendered) at a JSON pointer.
pub fn pointer_str(json: &Value, pointer: &str) -> Option<String> {
    match json.pointer(pointer)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A string at a JSON pointer; nothing else counts. For request fields, which Strapi reads only
/// as strings (`typeof deviceId === 'string'`): `{"deviceId": 123}` names no device.
pub fn pointer_string(json: &Value, pointer: &str) -> Option<String> {
    match json.pointer(pointer)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// Writes a parsed body back as `application/x-www-form-urlencoded`, for a backend that reads
/// no JSON (an OAuth2 token endpoint): `key=value` pairs, nested objects and arrays in qs's
/// bracket notation (`a[b]=c`, `a[0]=x`), everything but unreserved characters and brackets
/// percent-encoded.
pub fn to_urlencoded(v: &Value) -> String {
    const SET: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
    fn walk(prefix: &str, v: &Value, out: &mut Vec<String>) {
        let enc = |s: &str| percent_encoding::utf8_percent_encode(s, SET).to_string();
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let key = if prefix.is_empty() { enc(k) } else { format!("{prefix}[{}]", enc(k)) };
                    walk(&key, x, out);
                }
            }
            Value::Array(xs) => {
                for (i, x) in xs.iter().enumerate() {
                    walk(&format!("{prefix}[{i}]"), x, out);
                }
            }
            Value::String(s) => out.push(format!("{prefix}={}", enc(s))),
            Value::Null => out.push(format!("{prefix}=")),
            other => out.push(format!("{prefix}={other}")),
        }
    }
    let mut out = Vec::new();
    walk("", v, &mut out);
    out.join("&")
}

/// Builds `{"a":{"b":value}}` for pointer `/a/b`.
pub fn json_at(pointer: &str, value: &str) -> Value {
    let keys: Vec<&str> = pointer.split('/').skip(1).collect();
    keys.into_iter().rev().fold(Value::String(value.to_string()), |inner, key| {
        let mut m = serde_json::Map::new();
        m.insert(key.replace("~1", "/").replace("~0", "~"), inner);
        Value::Object(m)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn forms_are_written_back_as_qs_reads_them() {
        let v = serde_json::json!({"grant_type": "password", "username": "a b&c=d", "n": 5, "x": null, "o": {"k": ["p", "q"]}});
        let text = to_urlencoded(&v);
        assert_eq!(text, "grant_type=password&n=5&o[k][0]=p&o[k][1]=q&username=a%20b%26c%3Dd&x=");
    }

    #[test]
    fn set_cookie_extraction() {
        let mut h = HeaderMap::new();
        h.append(
            http::header::SET_COOKIE,
            HeaderValue::from_static("strapi_up_refresh=tok; path=/; samesite=lax; httponly"),
        );
        h.append(http::header::SET_COOKIE, HeaderValue::from_static("strapi_up_refresh.sig=sig; path=/"));
        assert_eq!(set_cookie(&h, "strapi_up_refresh").as_deref(), Some("tok"));
        let mut cleared = HeaderMap::new();
        cleared.append(
            http::header::SET_COOKIE,
            HeaderValue::from_static("strapi_up_refresh=; path=/; expires=Thu, 01 Jan 1970 00:00:00 GMT"),
        );
        assert_eq!(set_cookie(&cleared, "strapi_up_refresh"), None);
    }

    #[test]
    fn pointers_and_claims() {
        let v = serde_json::json!({"jwt": "t", "user": {"id": 7, "email": ""}});
        assert_eq!(pointer_str(&v, "/user/id").as_deref(), Some("7"));
        assert_eq!(pointer_str(&v, "/jwt").as_deref(), Some("t"));
        assert_eq!(pointer_str(&v, "/user/email"), None);
        assert_eq!(pointer_str(&v, "/nope"), None);
    }

    #[test]
    fn json_at_builds_nested_objects() {
        assert_eq!(json_at("/refreshToken", "t"), serde_json::json!({"refreshToken": "t"}));
        assert_eq!(json_at("/a/b~1c", "t"), serde_json::json!({"a": {"b/c": "t"}}));
    }
}
