//! `qs.parse` (qs 6.15, the version Strapi 5.54 installs) for the test backend: the object
//! Strapi builds from an urlencoded body (co-body passes `allowDots: true`) or from multipart
//! field names (formidable, no `allowDots`). Unlike the gateway's own form reader it never
//! refuses: duplicates combine into arrays, conflicting shapes merge the way qs merges them.
//! `tests/strapi_e2e.rs` compares it with the real qs on a generated corpus.
//!
//! Not modelled: qs's "overflow" bookkeeping once an array passes 20 elements (the array becomes
//! an object with numeric keys here too, but later merges into it are not special-cased).

use serde_json::{Map, Value};

use sessiongate::proxy::form::{split_key, unescape_brackets, ARRAY_LIMIT, PARAMETER_LIMIT};

/// A JavaScript value as qs builds it: strings, sparse arrays, objects.
#[derive(Debug, Clone)]
enum Js {
    Str(String),
    Arr(Vec<Option<Js>>),
    Obj(Vec<(String, Js)>),
}

impl Js {
    fn into_json(self) -> Value {
        match self {
            Js::Str(s) => Value::String(s),
            // `utils.compact` drops the holes.
            Js::Arr(items) => Value::Array(items.into_iter().flatten().map(Js::into_json).collect()),
            Js::Obj(fields) => {
                Value::Object(fields.into_iter().map(|(k, v)| (k, v.into_json())).collect::<Map<_, _>>())
            }
        }
    }
}

/// `qs.parse(text, { allowDots })`.
pub fn parse(text: &str, allow_dots: bool) -> Value {
    if text.is_empty() {
        return Value::Object(Map::new());
    }
    let mut temp: Vec<(String, Js)> = Vec::new();
    for (key, val) in values(text) {
        match temp.iter_mut().find(|(k, _)| *k == key) {
            Some((_, existing)) => *existing = combine(existing.clone(), val),
            None => temp.push((key, val)),
        }
    }
    let mut obj = Js::Obj(Vec::new());
    for (key, val) in temp {
        if let Some(new) = parse_keys(&key, val, allow_dots) {
            obj = merge(obj, new);
        }
    }
    obj.into_json()
}

/// `qs.parse` of `(name, value)` pairs already decoded (formidable builds `name=value` with
/// `qs.stringify` first, which is the same).
pub fn parse_pairs(pairs: &[(String, String)], allow_dots: bool) -> Value {
    let text: Vec<String> = pairs.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect();
    parse(&text.join("&"), allow_dots)
}

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// `utils.decode`: `+` is a space; an undecodable escape leaves the string as it is.
fn decode(s: &str) -> String {
    let plus = s.replace('+', " ");
    let bytes = plus.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if !bytes.get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                return plus;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    percent_encoding::percent_decode_str(&plus).decode_utf8().map(|c| c.into_owned()).unwrap_or(plus)
}

/// `parseValues`.
fn values(text: &str) -> Vec<(String, Js)> {
    let clean = unescape_brackets(text);
    let mut out = Vec::new();
    for part in clean.split('&').take(PARAMETER_LIMIT) {
        let pos = match part.find("]=") {
            Some(i) => Some(i + 1),
            None => part.find('='),
        };
        let (key, val) = match pos {
            Some(p) => (decode(&part[..p]), decode(&part[p + 1..])),
            None => (decode(part), String::new()),
        };
        out.push((key, Js::Str(val)));
    }
    out
}

/// `utils.combine`: `[].concat(a, b)`, an object past the array limit.
fn combine(a: Js, b: Js) -> Js {
    let mut items: Vec<Option<Js>> = Vec::new();
    for x in [a, b] {
        match x {
            Js::Arr(v) => items.extend(v),
            other => items.push(Some(other)),
        }
    }
    if items.len() > ARRAY_LIMIT {
        return array_to_object(items);
    }
    Js::Arr(items)
}

fn array_to_object(items: Vec<Option<Js>>) -> Js {
    Js::Obj(items.into_iter().enumerate().filter_map(|(i, v)| v.map(|v| (i.to_string(), v))).collect())
}

/// `splitKeyIntoSegments` (shared with the gateway) + `parseObject`.
fn parse_keys(key: &str, val: Js, allow_dots: bool) -> Option<Js> {
    if key.is_empty() {
        return None;
    }
    let segs: Vec<String> = split_key(key, allow_dots)?
        .into_iter()
        .map(|(text, bracketed)| if bracketed { format!("[{text}]") } else { text })
        .collect();
    Some(build(&segs, val))
}

/// `parseObject`: wraps the leaf from the innermost segment outwards.
fn build(segs: &[String], val: Js) -> Js {
    let mut leaf = val;
    for root in segs.iter().rev() {
        leaf = if root == "[]" {
            combine(Js::Arr(vec![]), leaf)
        } else {
            let clean = if root.starts_with('[') && root.ends_with(']') { &root[1..root.len() - 1] } else { root };
            let index = clean.parse::<usize>().ok().filter(|i| root != clean && i.to_string() == clean);
            match index {
                Some(i) if i < ARRAY_LIMIT => {
                    let mut v: Vec<Option<Js>> = vec![None; i + 1];
                    v[i] = Some(leaf);
                    Js::Arr(v)
                }
                Some(i) => Js::Obj(vec![(i.to_string(), leaf)]),
                None if clean == "__proto__" => Js::Obj(vec![]),
                None => Js::Obj(vec![(clean.to_string(), leaf)]),
            }
        };
    }
    leaf
}

/// `utils.merge` (with `strictMerge`, qs 6.15's default).
fn merge(target: Js, source: Js) -> Js {
    match (target, source) {
        // `if (!source) return target`: an empty string merges as nothing.
        (t, Js::Str(s)) if s.is_empty() => t,
        (Js::Arr(mut t), Js::Str(s)) => {
            if t.len() >= ARRAY_LIMIT {
                t.push(Some(Js::Str(s)));
                return array_to_object(t);
            }
            t.push(Some(Js::Str(s)));
            Js::Arr(t)
        }
        (Js::Obj(t), Js::Str(s)) => Js::Arr(vec![Some(Js::Obj(t)), Some(Js::Str(s))]),
        (Js::Str(t), source) => combine(Js::Str(t), source),
        (Js::Arr(mut t), Js::Arr(s)) => {
            for (i, item) in s.into_iter().enumerate() {
                let Some(item) = item else { continue };
                match t.get_mut(i) {
                    Some(slot @ Some(_)) => {
                        let existing = slot.take().expect("slot");
                        if matches!(existing, Js::Str(_)) || matches!(item, Js::Str(_)) {
                            *slot = Some(existing);
                            t.push(Some(item));
                        } else {
                            *slot = Some(merge(existing, item));
                        }
                    }
                    Some(slot) => *slot = Some(item),
                    None => {
                        t.resize(i, None);
                        t.push(Some(item));
                    }
                }
            }
            if t.len() > ARRAY_LIMIT {
                return array_to_object(t);
            }
            Js::Arr(t)
        }
        (Js::Arr(t), Js::Obj(s)) => merge(array_to_object(t), Js::Obj(s)),
        (Js::Obj(mut acc), Js::Obj(s)) => {
            for (k, v) in s {
                match acc.iter_mut().find(|(name, _)| *name == k) {
                    Some((_, existing)) => *existing = merge(existing.clone(), v),
                    None => acc.push((k, v)),
                }
            }
            Js::Obj(acc)
        }
        (Js::Obj(acc), Js::Arr(s)) => merge(
            Js::Obj(acc),
            Js::Obj(s.into_iter().enumerate().filter_map(|(i, v)| v.map(|v| (i.to_string(), v))).collect()),
        ),
    }
}
