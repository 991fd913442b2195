//! The credentials a request carries in its headers, read at least as leniently as the backend
//! reads them, and the one canonical form in which they are forwarded (STYLE 13b).
//!
//! A gateway that reads `Authorization` more strictly than the backend lets a token through
//! unchecked: Strapi splits the header on JavaScript's `\s+` (tab, NBSP and the Unicode spaces
//! included), so `Bearer<TAB>token` is a token to Strapi. The cure is not one more spelling but a
//! rule: the gateway parses the credential itself, checks it, and the backend receives exactly
//! `Authorization: Bearer <what was checked>` — or no `Authorization` at all when the header
//! holds nothing the gateway reads as a bearer token. Token cookies are treated the same way:
//! read leniently (any case of the name, spaces, quotes, percent-encoding), refused when one
//! name carries two different values, and re-emitted once, canonically.
//!
//! Nothing here knows sessions; `handler` decides what is checked and what is kept.

use crate::error::GatewayError;
use http::header::{self, HeaderMap, HeaderValue};

/// JavaScript's `\s`: ECMA-262 WhiteSpace and LineTerminator code points.
pub fn is_js_space(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\u{0B}' | '\u{0C}' | '\r' | ' ' | '\u{A0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200A}' | '\u{2028}' | '\u{2029}' | '\u{202F}' | '\u{205F}' | '\u{3000}' | '\u{FEFF}'
    )
}

/// A token read from a request, with the exact bytes it had there (forwarded unchanged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub text: String,
    /// The bytes as sent, when they differ from `text`'s UTF-8 (a latin-1 byte above 0x7F).
    raw: Option<Vec<u8>>,
}

impl Token {
    fn new(text: String, raw: &[u8]) -> Token {
        let raw = (raw != text.as_bytes()).then(|| raw.to_vec());
        Token { text, raw }
    }

    /// A token read from somewhere else than a header (a body field, a cookie value).
    pub fn from_text(text: String) -> Token {
        Token { text, raw: None }
    }

    /// The bytes to forward.
    fn raw(&self) -> &[u8] {
        self.raw.as_deref().unwrap_or(self.text.as_bytes())
    }
}

/// The bearer token of the request's `Authorization` header, read as Strapi reads it:
/// `value.split(/\s+/)`, two parts, the first `bearer` in any case. Node hands header bytes to
/// JavaScript as latin-1 after trimming spaces and tabs around the value, so a raw 0xA0 byte is
/// NBSP; a value that is valid UTF-8 is also read as UTF-8 (then U+3000 and the other Unicode
/// spaces separate too), which is more lenient than Node and harmless, since only what is found
/// here is ever forwarded. Two `Authorization` headers are refused: Node keeps the first, other
/// servers the last or both.
pub fn bearer(headers: &HeaderMap) -> Result<Option<Token>, GatewayError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(GatewayError::AmbiguousCredentials("Several Authorization headers"));
    }
    Ok(read_bearer(value.as_bytes()))
}

fn read_bearer(bytes: &[u8]) -> Option<Token> {
    let bytes = trim_ows(bytes);
    // Fast path (every JWT): `Bearer <token>` with one space and only visible ASCII after it.
    if let Some(rest) = bytes.get(7..).filter(|_| bytes[..7].eq_ignore_ascii_case(b"bearer ")) {
        if !rest.is_empty() && rest.iter().all(|b| (0x21..0x7f).contains(b)) {
            return std::str::from_utf8(rest).ok().map(|t| Token::from_text(t.to_string()));
        }
    }
    let latin1: String = bytes.iter().map(|&b| b as char).collect();
    if let Some((start, end)) = split_bearer(&latin1) {
        // Every char of a latin-1 string is one byte of the header: char positions are byte
        // positions of `bytes`.
        let (from, to) = (latin1[..start].chars().count(), latin1[..end].chars().count());
        return Some(Token::new(latin1[start..end].to_string(), &bytes[from..to]));
    }
    let utf8 = std::str::from_utf8(bytes).ok()?;
    let (start, end) = split_bearer(utf8)?;
    Some(Token::new(utf8[start..end].to_string(), &utf8.as_bytes()[start..end]))
}

/// Byte range of the token if `value.split(/\s+/)` gives exactly `["bearer" (any case), token]`.
fn split_bearer(value: &str) -> Option<(usize, usize)> {
    let mut runs = Vec::new();
    let mut prev_space = false;
    for (i, c) in value.char_indices() {
        let space = is_js_space(c);
        if space && !prev_space {
            runs.push((i, i));
        }
        if space {
            if let Some(r) = runs.last_mut() {
                r.1 = i + c.len_utf8();
            }
        }
        prev_space = space;
    }
    // Two parts means exactly one whitespace run, strictly inside the value.
    let [(sep_start, sep_end)] = runs.as_slice() else { return None };
    let (scheme, token) = (&value[..*sep_start], &value[*sep_end..]);
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some((*sep_end, value.len()))
}

/// Optional whitespace around a field value (RFC 9110 §5.5), which HTTP parsers drop.
fn trim_ows(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|c| *c != b' ' && *c != b'\t').unwrap_or(b.len());
    let end = b.iter().rposition(|c| *c != b' ' && *c != b'\t').map_or(start, |e| e + 1);
    &b[start..end]
}

/// Decodes one part of a query string as qs (Express's parser) does: `+` is a space, then
/// `%`-escapes (invalid UTF-8 replaced).
fn query_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned()
}

/// The access token in query parameter `name`, read as qs reads it: keys are decoded too
/// (`%61ccess_token` is `access_token`), and an empty value counts as absent. A key given twice,
/// or in bracket form (`name[]`, `name[x]`: an array or object), is refused — it names no
/// single token — rather than guessed at.
pub fn query_token(query: Option<&str>, name: &str) -> Result<Option<Token>, GatewayError> {
    let Some(query) = query else { return Ok(None) };
    let mut found: Option<String> = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = query_decode(k);
        let bracketed = key.strip_prefix(name).is_some_and(|rest| rest.starts_with('['));
        if bracketed || (key == name && found.is_some()) {
            return Err(GatewayError::AmbiguousCredentials("the access token query parameter is given more than once"));
        }
        if key == name {
            found = Some(query_decode(v));
        }
    }
    Ok(found.filter(|t| !t.is_empty()).map(Token::from_text))
}

/// The query string without parameter `name` (in any encoding of its key), plus `name=<token>`
/// encoded once: the query token exactly as checked.
pub fn set_query_token(query: Option<&str>, name: &str, token: Option<&Token>) -> String {
    const VALUE: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
    let mut parts: Vec<String> = query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty() && query_decode(p.split_once('=').map_or(*p, |(k, _)| k)) != name)
        .map(str::to_string)
        .collect();
    if let Some(t) = token {
        parts.push(format!("{name}={}", percent_encoding::utf8_percent_encode(&t.text, VALUE)));
    }
    parts.join("&")
}

/// Makes `Authorization` exactly `Bearer <token>`, or removes it when there is no token.
pub fn set_bearer(headers: &mut HeaderMap, token: Option<&Token>) {
    let Some(t) = token else {
        headers.remove(header::AUTHORIZATION);
        return;
    };
    let raw = t.raw();
    let already = headers.get(header::AUTHORIZATION).is_some_and(|v| {
        let b = v.as_bytes();
        b.len() == raw.len() + 7 && b.starts_with(b"Bearer ") && b[7..] == *raw
    });
    if already {
        return;
    }
    let mut value = b"Bearer ".to_vec();
    value.extend_from_slice(raw);
    match HeaderValue::from_bytes(&value) {
        Ok(v) => {
            headers.insert(header::AUTHORIZATION, v);
        }
        // The token's bytes came from a valid header value; this cannot happen, and if it did,
        // nothing unchecked may be forwarded.
        Err(_) => {
            headers.remove(header::AUTHORIZATION);
        }
    }
}

/// The request's cookies, from every `Cookie` header (HTTP/2 sends one per cookie), as
/// `name=value` pairs in order.
pub struct Cookies {
    pairs: Vec<(String, String)>,
}

impl Cookies {
    pub fn parse(headers: &HeaderMap) -> Cookies {
        let mut pairs = Vec::new();
        for v in headers.get_all(header::COOKIE) {
            // Latin-1, as Node reads header bytes; cookie names and tokens are ASCII anyway.
            let text: String = v.as_bytes().iter().map(|&b| b as char).collect();
            for part in text.split(';') {
                let part = part.trim_matches([' ', '\t']);
                if part.is_empty() {
                    continue;
                }
                match part.split_once('=') {
                    Some((k, v)) => pairs.push((k.trim_matches([' ', '\t']).to_string(), v.to_string())),
                    None => pairs.push((String::new(), part.to_string())),
                }
            }
        }
        Cookies { pairs }
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The token in cookie `name` (name compared without case). Quotes, surrounding spaces and
    /// percent-encoding are removed, as the most lenient cookie parsers do; an empty value is
    /// no token. Two different values under that name are refused.
    pub fn token(&self, name: &str) -> Result<Option<Token>, GatewayError> {
        let mut found: Option<String> = None;
        for (k, v) in &self.pairs {
            if !k.eq_ignore_ascii_case(name) {
                continue;
            }
            let Some(value) = cookie_value(v) else { continue };
            match &found {
                Some(f) if *f != value => {
                    return Err(GatewayError::AmbiguousCredentials("A token cookie is sent with two values"));
                }
                Some(_) => {}
                None => found = Some(value),
            }
        }
        Ok(found.map(Token::from_text))
    }

    /// Rewrites the `Cookie` header: every cookie named in `names` (any case) is dropped, then
    /// `keep` is appended as `name=value`. Other cookies pass as they came. Does nothing when no
    /// cookie of `names` was sent and `keep` is empty.
    pub fn rewrite(&self, headers: &mut HeaderMap, names: &[&str], keep: &[(&str, &Token)]) {
        let named = |k: &str| names.iter().any(|n| k.eq_ignore_ascii_case(n));
        if keep.is_empty() && !self.pairs.iter().any(|(k, _)| named(k)) {
            return;
        }
        let mut out: Vec<u8> = Vec::new();
        let mut push = |part: &[u8]| {
            if !out.is_empty() {
                out.extend_from_slice(b"; ");
            }
            out.extend_from_slice(part);
        };
        for (k, v) in self.pairs.iter().filter(|(k, _)| !named(k)) {
            let pair = if k.is_empty() { v.clone() } else { format!("{k}={v}") };
            // Back to the bytes the client sent (latin-1).
            push(&pair.chars().map(|c| c as u32 as u8).collect::<Vec<u8>>());
        }
        for (name, token) in keep {
            let mut pair = name.as_bytes().to_vec();
            pair.push(b'=');
            pair.extend_from_slice(token.raw());
            push(&pair);
        }
        headers.remove(header::COOKIE);
        if out.is_empty() {
            return;
        }
        if let Ok(v) = HeaderValue::from_bytes(&out) {
            headers.insert(header::COOKIE, v);
        }
    }
}

/// A cookie value as a token: trimmed, unquoted, percent-decoded (when that yields UTF-8).
fn cookie_value(v: &str) -> Option<String> {
    let v = v.trim_matches([' ', '\t']);
    let v = v.strip_prefix('"').map(|s| s.strip_suffix('"').unwrap_or(s)).unwrap_or(v);
    let v = if v.contains('%') {
        percent_encoding::percent_decode_str(v).decode_utf8().map(|d| d.into_owned()).unwrap_or_else(|_| v.to_string())
    } else {
        v.to_string()
    };
    (!v.is_empty() && !v.chars().any(|c| c == ';' || c.is_control())).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_token_is_read_as_qs_reads_it_and_forwarded_as_checked() {
        let t = |q: &str| query_token(Some(q), "access_token").map(|o| o.map(|t| t.text));
        assert_eq!(t("access_token=abc").ok(), Some(Some("abc".into())));
        assert_eq!(t("x=1&%61ccess_token=a%2Bb+c").ok(), Some(Some("a+b c".into())), "keys are decoded too");
        assert_eq!(t("access_token=").ok(), Some(None), "empty counts as absent");
        assert_eq!(t("ACCESS_TOKEN=abc").ok(), Some(None), "names are case-sensitive");
        for bad in [
            "access_token=a&access_token=b",
            "access_token[]=a",
            "access_token[0]=a",
            "access_token=a&%61ccess_token=b",
        ] {
            assert!(matches!(t(bad), Err(GatewayError::AmbiguousCredentials(_))), "{bad}");
        }
        let tok = Token::from_text("a+b/c".into());
        assert_eq!(
            set_query_token(Some("x=1&%61ccess_token=zzz&y=2"), "access_token", Some(&tok)),
            "x=1&y=2&access_token=a%2Bb%2Fc"
        );
        assert_eq!(set_query_token(Some("access_token=zzz"), "access_token", None), "");
        assert_eq!(set_query_token(None, "access_token", None), "");
    }

    fn auth(value: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_bytes(value).expect("header value"));
        h
    }

    fn token(value: &[u8]) -> Option<String> {
        bearer(&auth(value)).expect("one header").map(|t| t.text)
    }

    /// Each row: the header bytes, and the token Strapi (`split(/\s+/)`, two parts, `bearer`)
    /// reads from them, or `None` when Strapi reads no token. (VT, FF, CR and LF cannot occur:
    /// HTTP parsers refuse control bytes in field values.)
    #[test]
    fn authorization_is_read_like_strapi() {
        let t = Some("tok".to_string());
        let rows: &[(&[u8], Option<String>)] = &[
            (b"Bearer tok", t.clone()),
            (b"bearer tok", t.clone()),
            (b"BEARER tok", t.clone()),
            (b"BeArEr tok", t.clone()),
            (b"Bearer\ttok", t.clone()),
            (b"Bearer  tok", t.clone()),
            (b"Bearer \t tok", t.clone()),
            (b"Bearer\xa0tok", t.clone()),
            (b"Bearer \xa0tok", t.clone()),
            (b"  Bearer tok  ", t.clone()),
            (b"\tBearer tok\t", t.clone()),
            ("Bearer\u{3000}tok".as_bytes(), t.clone()),
            ("Bearer\u{2003}tok".as_bytes(), t.clone()),
            ("Bearer\u{feff}tok".as_bytes(), t.clone()),
            ("Bearer\u{a0}tok".as_bytes(), t.clone()),
            (b"Bearer", None),
            (b"Bearer ", None),
            (b"Bearer tok extra", None),
            (b"Bearer tok\xa0", None),
            (b"\xa0Bearer tok", None),
            (b"Basic dG9rOg==", None),
            (b"Bearertok", None),
            (b"tok", None),
            (b"Bearer: tok", None),
        ];
        for (value, want) in rows {
            assert_eq!(token(value), *want, "{:?}", String::from_utf8_lossy(value));
        }
    }

    #[test]
    fn two_authorization_headers_are_refused() {
        let mut h = auth(b"Bearer a");
        h.append(header::AUTHORIZATION, HeaderValue::from_static("Bearer b"));
        assert!(matches!(bearer(&h), Err(GatewayError::AmbiguousCredentials(_))));
        assert!(bearer(&HeaderMap::new()).expect("none").is_none());
    }

    #[test]
    fn the_forwarded_header_is_exactly_what_was_read() {
        for value in [&b"bearer\ttok"[..], b"Bearer\xa0tok", "Bearer\u{3000}tok".as_bytes(), b"Bearer tok"] {
            let mut h = auth(value);
            let t = bearer(&h).expect("ok");
            set_bearer(&mut h, t.as_ref());
            assert_eq!(h[header::AUTHORIZATION], "Bearer tok");
        }
        let mut h = auth(b"Basic abc");
        let t = bearer(&h).expect("ok");
        set_bearer(&mut h, t.as_ref());
        assert!(!h.contains_key(header::AUTHORIZATION), "an unreadable Authorization is not forwarded");
        // A non-ASCII token keeps its bytes.
        let mut h = auth(b"Bearer t\xe9k");
        let t = bearer(&h).expect("ok");
        assert_eq!(t.as_ref().map(|t| t.text.as_str()), Some("t\u{e9}k"));
        set_bearer(&mut h, t.as_ref());
        assert_eq!(h[header::AUTHORIZATION].as_bytes(), b"Bearer t\xe9k");
    }

    fn cookies(values: &[&str]) -> (HeaderMap, Cookies) {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::COOKIE, HeaderValue::from_str(v).expect("cookie"));
        }
        let c = Cookies::parse(&h);
        (h, c)
    }

    #[test]
    fn token_cookies_are_read_leniently() {
        let rows: &[(&[&str], Option<&str>)] = &[
            (&["strapi_up_refresh=tok"], Some("tok")),
            (&["a=1; strapi_up_refresh=tok; b=2"], Some("tok")),
            (&["a=1;strapi_up_refresh=tok"], Some("tok")),
            (&["a=1;\tstrapi_up_refresh=tok"], Some("tok")),
            (&["strapi_up_refresh =tok"], Some("tok")),
            (&["strapi_up_refresh= tok "], Some("tok")),
            (&["strapi_up_refresh=\"tok\""], Some("tok")),
            (&["STRAPI_UP_REFRESH=tok"], Some("tok")),
            (&["strapi_up_refresh=%74ok"], Some("tok")),
            (&["a=1", "strapi_up_refresh=tok"], Some("tok")),
            (&["strapi_up_refresh=tok; strapi_up_refresh=tok"], Some("tok")),
            (&["strapi_up_refresh="], None),
            (&["strapi_up_refresh=\"\""], None),
            (&["strapi_up_refresh.sig=abc"], None),
            (&["xstrapi_up_refresh=tok"], None),
            (&["a=1"], None),
        ];
        for (values, want) in rows {
            let (_, c) = cookies(values);
            assert_eq!(
                c.token("strapi_up_refresh").expect("unambiguous").map(|t| t.text).as_deref(),
                *want,
                "{values:?}"
            );
        }
        let (_, c) = cookies(&["strapi_up_refresh=a; Strapi_Up_Refresh=b"]);
        assert!(matches!(c.token("strapi_up_refresh"), Err(GatewayError::AmbiguousCredentials(_))));
        let (_, c) = cookies(&["strapi_up_refresh=a", "strapi_up_refresh=b"]);
        assert!(c.token("strapi_up_refresh").is_err());
    }

    #[test]
    fn token_cookies_are_forwarded_once_and_canonically() {
        let (mut h, c) = cookies(&["a=1; STRAPI_UP_REFRESH=\"tok\"; b=2", "strapi_up_refresh=tok"]);
        let t = c.token("strapi_up_refresh").expect("ok").expect("some");
        c.rewrite(&mut h, &["strapi_up_refresh"], &[("strapi_up_refresh", &t)]);
        assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(h[header::COOKIE], "a=1; b=2; strapi_up_refresh=tok");
        let (mut h, c) = cookies(&["strapi_up_refresh=tok"]);
        c.rewrite(&mut h, &["strapi_up_refresh"], &[]);
        assert!(!h.contains_key(header::COOKIE), "a dropped token cookie leaves no empty header");
        let (mut h, c) = cookies(&["a=1", "b=2"]);
        c.rewrite(&mut h, &["strapi_up_refresh"], &[]);
        assert_eq!(h.get_all(header::COOKIE).iter().count(), 2, "untouched when no token cookie was sent");
    }
}
