//! Auth-route request bodies: decoded and parsed in every form the backend accepts, and
//! forwarded only as the JSON the gateway parsed (STYLE 13b).
//!
//! Strapi's body middleware (koa-body 6 with `multipart: true`, co-body, qs, formidable) reads
//! POST, PUT and PATCH bodies as JSON (`application/json`, `json-patch+json`, `vnd.api+json`,
//! `csp-report`, `reports+json`), urlencoded forms with nested keys, text, and multipart
//! fields, after undoing a `Content-Encoding` of gzip, deflate or br; it skips a UTF-8 BOM. A
//! gateway that reads only strict JSON sees "no refresh token" in a form-encoded or gzipped
//! refresh, forwards it, and the backend mints fresh tokens for a session that was ended.
//!
//! So every auth-route body is parsed here into one JSON value, and the backend receives that
//! value re-serialized, with `Content-Type: application/json` and its `Content-Length` — never
//! the client's bytes. What cannot be read unambiguously is refused: invalid UTF-8, duplicate
//! keys with different values, nesting past [`MAX_DEPTH`], integers beyond 2^53 (JavaScript
//! would round them), `__proto__` keys (Strapi's JSON parser refuses them too), file parts,
//! text bodies, unknown content types or codings. Bodies of other methods are not forwarded at
//! all: Strapi does not read them.

use crate::config::BodyFormat;
use crate::error::GatewayError;
use bytes::Bytes;
use http::{header, HeaderMap, Method};
use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::cell::Cell;
use std::io::Read;

/// Deepest nesting of objects and arrays accepted in a JSON body.
pub const MAX_DEPTH: usize = 32;
/// The largest integer JavaScript holds exactly (2^53).
const MAX_SAFE_INTEGER: u64 = 1 << 53;

/// The media types koa-body 6 parses as JSON.
const JSON_TYPES: &[&str] = &[
    "application/json",
    "application/json-patch+json",
    "application/vnd.api+json",
    "application/csp-report",
    "application/reports+json",
];

/// What an auth-route request carries as its body.
#[derive(Debug, Clone, PartialEq)]
pub enum AuthBody {
    /// No body, or one the backend does not read (a GET or DELETE body): nothing is forwarded.
    None,
    /// The parsed body; forwarded as this JSON.
    Json(Value),
}

impl AuthBody {
    pub fn json(&self) -> Option<&Value> {
        match self {
            AuthBody::Json(v) => Some(v),
            AuthBody::None => None,
        }
    }
}

/// Reads a buffered auth-route body. `max` bounds the decoded size too (a small gzip body can
/// expand a thousandfold).
pub fn parse(
    (method, methods): (&Method, &[Method]),
    headers: &HeaderMap,
    raw: &Bytes,
    formats: &[BodyFormat],
    max: usize,
) -> Result<AuthBody, GatewayError> {
    if !methods.contains(method) || raw.is_empty() {
        return Ok(AuthBody::None);
    }
    let decoded = decode(headers, raw, max)?;
    if decoded.is_empty() {
        return Ok(AuthBody::None);
    }
    let kind = media_type(headers)?;
    if !formats.contains(&kind) {
        return Err(GatewayError::UnsupportedMediaType("This body format is not accepted on authentication routes"));
    }
    let value = match kind {
        BodyFormat::Json => json(&decoded)?,
        BodyFormat::Urlencoded => {
            let text =
                std::str::from_utf8(&decoded).map_err(|_| GatewayError::MalformedBody("Body is not valid UTF-8"))?;
            super::form::parse_urlencoded(text).map_err(GatewayError::MalformedBody)?
        }
        BodyFormat::Multipart => multipart(headers, decoded)?,
    };
    Ok(AuthBody::Json(value))
}

/// Undoes the request's `Content-Encoding` (one of gzip, deflate, br; `identity` is none).
fn decode(headers: &HeaderMap, raw: &Bytes, max: usize) -> Result<Bytes, GatewayError> {
    let mut codings = Vec::new();
    for v in headers.get_all(header::CONTENT_ENCODING) {
        let v = v.to_str().map_err(|_| GatewayError::UnsupportedMediaType("Unsupported Content-Encoding"))?;
        for c in v.split(',').map(|c| c.trim().to_ascii_lowercase()).filter(|c| !c.is_empty() && c != "identity") {
            codings.push(c);
        }
    }
    let reader: Box<dyn Read + '_> = match codings.as_slice() {
        [] => return Ok(raw.clone()),
        [c] if c == "gzip" || c == "x-gzip" || c == "deflate" => {
            // Like Node's zlib.createUnzip: gzip or zlib framing, told apart by the magic bytes.
            if raw.starts_with(&[0x1f, 0x8b]) {
                Box::new(flate2::read::MultiGzDecoder::new(&raw[..]))
            } else {
                Box::new(flate2::read::ZlibDecoder::new(&raw[..]))
            }
        }
        [c] if c == "br" => Box::new(brotli_decompressor::Decompressor::new(&raw[..], 4096)),
        // Strapi's inflation accepts exactly one coding.
        _ => return Err(GatewayError::UnsupportedMediaType("Unsupported Content-Encoding")),
    };
    let mut out = Vec::new();
    let read = reader.take(max as u64 + 1).read_to_end(&mut out);
    match read {
        Ok(n) if n > max => Err(GatewayError::BodyTooLarge),
        Ok(_) => Ok(Bytes::from(out)),
        Err(_) => Err(GatewayError::MalformedBody("Body does not decode with its Content-Encoding")),
    }
}

/// The body format named by `Content-Type`; a charset other than UTF-8 is refused.
fn media_type(headers: &HeaderMap) -> Result<BodyFormat, GatewayError> {
    let unsupported = GatewayError::UnsupportedMediaType("Unsupported Content-Type on an authentication route");
    let mut values = headers.get_all(header::CONTENT_TYPE).iter();
    let (Some(v), None) = (values.next(), values.next()) else { return Err(unsupported) };
    let v = v.to_str().map_err(|_| GatewayError::UnsupportedMediaType("Unsupported Content-Type"))?;
    let mut parts = v.split(';');
    let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    for p in parts {
        if let Some((k, val)) = p.split_once('=') {
            let val = val.trim().trim_matches('"').to_ascii_lowercase();
            if k.trim().eq_ignore_ascii_case("charset") && val != "utf-8" && val != "utf8" {
                return Err(GatewayError::UnsupportedMediaType("Only UTF-8 bodies are accepted"));
            }
        }
    }
    if JSON_TYPES.contains(&essence.as_str()) || (essence.starts_with("application/") && essence.ends_with("+json")) {
        Ok(BodyFormat::Json)
    } else if essence == "application/x-www-form-urlencoded" {
        Ok(BodyFormat::Urlencoded)
    } else if essence.starts_with("multipart/") {
        Ok(BodyFormat::Multipart)
    } else {
        Err(unsupported)
    }
}

/// A JSON body, read with the rules in the module doc.
pub fn json(bytes: &[u8]) -> Result<Value, GatewayError> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    // co-body's strict mode: an object or an array.
    match bytes.iter().find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r')) {
        Some(b'{' | b'[') => {}
        _ => return Err(GatewayError::MalformedBody("Body must be a JSON object or array")),
    }
    let why = Cell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = Strict { depth: 0, why: &why }.deserialize(&mut de).and_then(|v| de.end().map(|_| v));
    parsed.map_err(|_| GatewayError::MalformedBody(why.get().unwrap_or("Body is not valid JSON")))
}

/// Builds a `Value` like serde_json does, refusing what a JavaScript backend would read
/// differently (see the module doc). `why` carries the reason out of serde's error.
#[derive(Clone, Copy)]
struct Strict<'a> {
    depth: usize,
    why: &'a Cell<Option<&'static str>>,
}

impl Strict<'_> {
    fn fail<E: serde::de::Error>(&self, why: &'static str) -> E {
        self.why.set(Some(why));
        E::custom(why)
    }
    fn nested(&self) -> Result<Self, &'static str> {
        if self.depth >= MAX_DEPTH {
            return Err("Body is nested too deeply");
        }
        Ok(Strict { depth: self.depth + 1, why: self.why })
    }
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }
    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Value, E> {
        if n > MAX_SAFE_INTEGER {
            return Err(self.fail("Body has an integer beyond 2^53"));
        }
        Ok(Value::Number(n.into()))
    }
    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Value, E> {
        if n.unsigned_abs() > MAX_SAFE_INTEGER {
            return Err(self.fail("Body has an integer beyond 2^53"));
        }
        Ok(Value::Number(n.into()))
    }
    fn visit_f64<E: serde::de::Error>(self, f: f64) -> Result<Value, E> {
        // Parsed with correct rounding (serde_json `float_roundtrip`), as JavaScript does.
        Number::from_f64(f).map(Value::Number).ok_or_else(|| self.fail("Body has a number out of range"))
    }
    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_string()))
    }
    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.nested().map_err(|w| self.fail::<A::Error>(w))?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(inner)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.nested().map_err(|w| self.fail::<A::Error>(w))?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == "__proto__" {
                return Err(self.fail("Body has a __proto__ key"));
            }
            let value = map.next_value_seed(inner)?;
            match out.get(&key) {
                Some(prev) if *prev != value => return Err(self.fail("Body has one key twice with different values")),
                Some(_) => {}
                None => {
                    out.insert(key, value);
                }
            }
        }
        Ok(Value::Object(out))
    }
}

/// The fields of a multipart body (formidable: a part without its own `Content-Type` is a
/// field), named like form keys. A file part is refused: no authentication route takes files.
fn multipart(headers: &HeaderMap, body: Bytes) -> Result<Value, GatewayError> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let boundary =
        multer::parse_boundary(ct).map_err(|_| GatewayError::MalformedBody("Multipart body has no boundary"))?;
    let stream = futures_util::stream::iter([Ok::<Bytes, std::io::Error>(body)]);
    let mut parts = multer::Multipart::new(stream, boundary);
    // The body is in memory, so the parser never waits: poll it to completion here.
    let pairs = poll_in_memory(async move {
        let mut pairs = Vec::new();
        while let Some(field) = parts.next_field().await.map_err(|_| "Multipart body is malformed")? {
            if field.content_type().is_some() {
                return Err("Multipart file parts are not accepted on authentication routes");
            }
            let name = field.name().map(str::to_string).unwrap_or_default();
            let bytes = field.bytes().await.map_err(|_| "Multipart body is malformed")?;
            let value = String::from_utf8(bytes.to_vec()).map_err(|_| "Multipart field is not valid UTF-8")?;
            pairs.push((name, value));
        }
        Ok(pairs)
    })
    .unwrap_or(Err("Multipart body could not be parsed"))
    .map_err(|why| {
        if why.contains("file parts") {
            GatewayError::UnsupportedMediaType(why)
        } else {
            GatewayError::MalformedBody(why)
        }
    })?;
    super::form::from_pairs(pairs, false).map_err(GatewayError::MalformedBody)
}

/// Runs a future that never waits on I/O (a parser over an in-memory stream): it completes in
/// the first poll. `None` if it still waits after a few (it never should; a request path must
/// not spin).
fn poll_in_memory<T>(fut: impl std::future::Future<Output = T>) -> Option<T> {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    (0..16).find_map(|_| match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::Write;

    const ALL: &[BodyFormat] = &[BodyFormat::Json, BodyFormat::Urlencoded, BodyFormat::Multipart];
    const POSTS: &[Method] = &[Method::POST];

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(http::HeaderName::from_bytes(k.as_bytes()).expect("name"), v.parse().expect("value"));
        }
        h
    }

    fn read(ct: &str, ce: Option<&str>, body: Vec<u8>) -> Result<AuthBody, GatewayError> {
        let mut h = headers(&[("content-type", ct)]);
        if let Some(ce) = ce {
            h.insert(header::CONTENT_ENCODING, ce.parse().expect("ce"));
        }
        parse((&Method::POST, POSTS), &h, &Bytes::from(body), ALL, 1 << 20)
    }

    fn gzip(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b).expect("gzip");
        e.finish().expect("gzip")
    }

    fn zlib(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b).expect("zlib");
        e.finish().expect("zlib")
    }

    fn brotli(b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        brotli::BrotliCompress(
            &mut &b[..],
            &mut out,
            &brotli::enc::BrotliEncoderParams { quality: 4, lgwin: 16, ..Default::default() },
        )
        .expect("br");
        out
    }

    #[test]
    fn every_format_and_coding_strapi_reads_gives_the_same_object() {
        let want = AuthBody::Json(json!({"refreshToken": "tok"}));
        let j = br#"{"refreshToken":"tok"}"#.to_vec();
        assert_eq!(read("application/json", None, j.clone()).expect("json"), want);
        assert_eq!(read("application/json; charset=UTF-8", None, j.clone()).expect("charset"), want);
        assert_eq!(read("application/vnd.api+json", None, j.clone()).expect("vnd"), want);
        assert_eq!(read("application/json", None, [b"\xef\xbb\xbf".as_slice(), &j].concat()).expect("bom"), want);
        assert_eq!(read("application/json", Some("gzip"), gzip(&j)).expect("gzip"), want);
        assert_eq!(read("application/json", Some("deflate"), zlib(&j)).expect("deflate"), want);
        assert_eq!(read("application/json", Some("deflate"), gzip(&j)).expect("deflate framed as gzip"), want);
        assert_eq!(read("application/json", Some("br"), brotli(&j)).expect("br"), want);
        assert_eq!(read("application/json", Some("identity"), j.clone()).expect("identity"), want);
        assert_eq!(read("application/x-www-form-urlencoded", None, b"refreshToken=tok".to_vec()).expect("form"), want);
        assert_eq!(
            read("application/x-www-form-urlencoded", Some("gzip"), gzip(b"refreshToken=tok")).expect("gzip form"),
            want
        );
        let mp = b"--XyZ\r\nContent-Disposition: form-data; name=\"refreshToken\"\r\n\r\ntok\r\n--XyZ--\r\n".to_vec();
        assert_eq!(read("multipart/form-data; boundary=XyZ", None, mp).expect("multipart"), want);
    }

    #[test]
    fn bodies_that_cannot_be_read_unambiguously_are_refused() {
        let bad_request: &[(&str, &[u8])] = &[
            ("application/json", br#"{"refreshToken":"a","refreshToken":"b"}"#),
            ("application/json", br#"{"__proto__":{"x":1}}"#),
            ("application/json", br#"{"a":9007199254740993}"#),
            ("application/json", br#"{"a":-9007199254740993}"#),
            ("application/json", br#""just a string""#),
            ("application/json", b"   "),
            ("application/json", b"{\"a\":\"\xff\"}"),
            ("application/json", br#"{"a":1} trailing"#),
            ("application/json", br#"{"a":1,}"#),
            ("application/json", br#"{"a":"\ud800"}"#),
            ("application/x-www-form-urlencoded", b"refreshToken=a&refreshToken=b"),
            ("application/x-www-form-urlencoded", b"a=\xff"),
        ];
        for (ct, body) in bad_request {
            let r = read(ct, None, body.to_vec());
            assert!(
                matches!(r, Err(GatewayError::MalformedBody(_))),
                "{ct} {:?}: {r:?}",
                String::from_utf8_lossy(body)
            );
        }
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(matches!(read("application/json", None, deep.into_bytes()), Err(GatewayError::MalformedBody(_))));
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(read("application/json", None, ok.into_bytes()).is_ok());
        let unsupported: &[(&str, Option<&str>, &[u8])] = &[
            ("text/plain", None, br#"{"refreshToken":"tok"}"#),
            ("application/octet-stream", None, b"x"),
            ("application/json; charset=latin1", None, b"{}"),
            ("application/json", Some("compress"), b"{}"),
            ("application/json", Some("gzip, br"), b"{}"),
        ];
        for (ct, ce, body) in unsupported {
            let r = read(ct, *ce, body.to_vec());
            assert!(matches!(r, Err(GatewayError::UnsupportedMediaType(_))), "{ct} {ce:?}: {r:?}");
        }
        let file = b"--B\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nx\r\n--B--\r\n";
        assert!(matches!(
            read("multipart/form-data; boundary=B", None, file.to_vec()),
            Err(GatewayError::UnsupportedMediaType(_))
        ));
        assert!(matches!(
            read("application/json", Some("gzip"), b"not gzip".to_vec()),
            Err(GatewayError::MalformedBody(_))
        ));
        let mut h = headers(&[]);
        assert!(parse((&Method::POST, POSTS), &h, &Bytes::from_static(b"{}"), ALL, 1024).is_err(), "no content type");
        h.insert(header::CONTENT_TYPE, "application/json".parse().expect("ct"));
        assert!(matches!(
            parse((&Method::POST, POSTS), &h, &Bytes::from_static(b"{}"), &[BodyFormat::Urlencoded], 1024),
            Err(GatewayError::UnsupportedMediaType(_))
        ));
    }

    #[test]
    fn identical_duplicates_numbers_and_depth_are_kept() {
        assert_eq!(json(br#"{"a":1,"a":1}"#).expect("same value twice"), json!({"a": 1}));
        assert_eq!(
            json(br#"{"a":9007199254740992,"b":0.1,"c":1e300}"#).expect("safe"),
            json!({"a": 9007199254740992u64, "b": 0.1, "c": 1e300})
        );
        assert_eq!(json(b" \r\n\t[1]").expect("leading whitespace"), json!([1]));
    }

    #[test]
    fn decoded_size_is_bounded_and_other_methods_carry_no_body() {
        let big = gzip(&vec![b' '; 100_000]);
        let h = headers(&[("content-type", "application/json"), ("content-encoding", "gzip")]);
        assert!(matches!(
            parse((&Method::POST, POSTS), &h, &Bytes::from(big), ALL, 4096),
            Err(GatewayError::BodyTooLarge)
        ));
        let h = headers(&[("content-type", "application/json")]);
        for m in [Method::GET, Method::DELETE, Method::HEAD, Method::OPTIONS] {
            assert_eq!(
                parse((&m, POSTS), &h, &Bytes::from_static(b"{\"a\":1}"), ALL, 1024).expect("ok"),
                AuthBody::None
            );
        }
        assert_eq!(parse((&Method::POST, POSTS), &h, &Bytes::new(), ALL, 1024).expect("empty"), AuthBody::None);
    }
}
