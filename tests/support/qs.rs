//! `qs.parse` (qs 6.15, the version Strapi 5.54 installs) for the test backend: the object
//! Strapi builds from an urlencoded body (co-body passes `allowDots: true`) or from multipart
//! field names (formidable, no `allowDots`). Unlike the gateway's own form reader it never
//! refuses: duplicates combine into arrays, conflicting shapes merge the way qs merges them.
//! `tests/strapi_e2e.rs` compares it with the real qs on a generated corpus.
//!
//! Not modelled: qs's "overflow" bookkeeping once an array passes 20 elements (the array becomes
//! an object with numeric keys here too, but later merges into it are not special-cased).

use serde_json::{Map, Value};

const DEPTH: usize = 5;
const ARRAY_LIMIT: usize = 20;
const PARAMETER_LIMIT: usize = 1000;
const PROTOTYPE_KEYS: &[&str] = &[
    "__proto__",
    "__defineGetter__",
    "__defineSetter__",
    "__lookupGetter__",
    "__lookupSetter__",
    "constructor",
    "hasOwnProperty",
    "isPrototypeOf",
    "propertyIsEnumerable",
    "toLocaleString",
    "toString",
    "valueOf",
];

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
    let clean = replace_ci(&replace_ci(text, "%5b", "["), "%5d", "]");
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

fn replace_ci(s: &str, from: &str, to: &str) -> String {
    let lower = s.to_ascii_lowercase();
    let mut out = String::with_capacity(s.len());
    let mut last = 0;
    for (i, _) in lower.match_indices(from) {
        out.push_str(&s[last..i]);
        out.push_str(to);
        last = i + from.len();
    }
    out.push_str(&s[last..]);
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

/// `splitKeyIntoSegments` + `parseObject`.
fn parse_keys(key: &str, val: Js, allow_dots: bool) -> Option<Js> {
    if key.is_empty() {
        return None;
    }
    let key = if allow_dots { dots(key) } else { key.to_string() };
    let mut segs: Vec<String> = Vec::new();
    let first = key.find('[');
    let parent = first.map_or(key.as_str(), |i| &key[..i]);
    if !parent.is_empty() {
        if PROTOTYPE_KEYS.contains(&parent) {
            return None;
        }
        segs.push(parent.to_string());
    }
    let b = key.as_bytes();
    let mut open = first;
    let mut collected = 0;
    while let Some(o) = open.filter(|_| collected < DEPTH) {
        let (mut level, mut i, mut close) = (1, o + 1, None);
        while i < b.len() && close.is_none() {
            match b[i] {
                b'[' => level += 1,
                b']' => {
                    level -= 1;
                    if level == 0 {
                        close = Some(i);
                    }
                }
                _ => {}
            }
            i += 1;
        }
        let Some(c) = close else {
            segs.push(format!("[{}]", &key[o..]));
            return Some(build(&segs, val));
        };
        let seg = &key[o..=c];
        if PROTOTYPE_KEYS.contains(&&seg[1..seg.len() - 1]) {
            return None;
        }
        segs.push(seg.to_string());
        collected += 1;
        open = key[c + 1..].find('[').map(|j| j + c + 1);
    }
    if let Some(o) = open {
        segs.push(format!("[{}]", &key[o..]));
    }
    Some(build(&segs, val))
}

fn dots(key: &str) -> String {
    let mut out = String::new();
    let mut rest = key;
    while let Some(i) = rest.find('.') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let n = after.find(['.', '[']).unwrap_or(after.len());
        if n == 0 {
            out.push('.');
            rest = after;
        } else {
            out.push_str(&format!("[{}]", &after[..n]));
            rest = &after[n..];
        }
    }
    out.push_str(rest);
    out
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
