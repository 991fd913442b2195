//! Form fields (`application/x-www-form-urlencoded`, and multipart field names) turned into the
//! JSON object the backend would build from them.
//!
//! Strapi builds request bodies with `qs` 6 (through co-body, with `allowDots`, and through
//! formidable's `multiples`, without): `a[b]=c` nests, `a.b=c` nests in urlencoded bodies,
//! `a[]=x` appends, `a[0]=x` indexes, depth stops at 5 bracket groups, keys named after
//! `Object.prototype` members are dropped, `+` is a space. This module gives the same object for
//! every input where the result is unambiguous (repeating a field with the same value gives
//! qs's array, `a=x&a=x` → `["x","x"]`), and refuses (`Err`) where `qs` would have to merge
//! conflicting shapes (`a=1&a[b]=2`), combine different values under one key (`a=1&a=2`, which
//! other parsers read as first or last), exceed its array limit, or decode an invalid
//! percent-escape (which `qs` keeps undecoded). `tests/strapi_e2e.rs` checks it against the
//! real qs. The caller forwards the result as JSON,
//! so the backend never parses a form itself.

use serde_json::{Map, Value};

/// `qs`'s defaults: nesting depth, largest array index, most parameters. (These facts about qs,
/// [`PROTOTYPE_KEYS`], [`unescape_brackets`] and [`dots_to_brackets`] are shared with the test
/// backend's qs port; `tests/strapi_e2e.rs` checks both against the real qs.)
pub const DEPTH: usize = 5;
pub const ARRAY_LIMIT: usize = 20;
pub const PARAMETER_LIMIT: usize = 1000;

/// Names on `Object.prototype`; `qs` drops a key whose parent or any bracket group is one.
pub const PROTOTYPE_KEYS: &[&str] = &[
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

/// Parses an urlencoded body (already UTF-8) with co-body's options (`allowDots`).
pub fn parse_urlencoded(text: &str) -> Result<Value, &'static str> {
    let text = unescape_brackets(text);
    let parts: Vec<&str> = text.split('&').collect();
    if parts.len() > PARAMETER_LIMIT {
        return Err("form body has too many fields");
    }
    let mut pairs = Vec::with_capacity(parts.len());
    for part in parts {
        let pos = match part.find("]=") {
            Some(i) => Some(i + 1),
            None => part.find('='),
        };
        let (key, value) = match pos {
            Some(p) => (decode(&part[..p])?, decode(&part[p + 1..])?),
            None => (decode(part)?, String::new()),
        };
        pairs.push((key, value));
    }
    from_pairs(pairs, true)
}

/// Builds the object from decoded `(name, value)` pairs, as `qs.parse` does after decoding.
pub fn from_pairs(pairs: Vec<(String, String)>, allow_dots: bool) -> Result<Value, &'static str> {
    if pairs.len() > PARAMETER_LIMIT {
        return Err("form body has too many fields");
    }
    let mut root = Node::Obj(Vec::new());
    let mut spellings: Vec<String> = Vec::new();
    for (key, value) in pairs {
        if key.is_empty() {
            continue;
        }
        let Some(path) = segments(&key, allow_dots) else { continue };
        let spelling = match spellings.iter().position(|k| *k == key) {
            Some(i) => i,
            None => {
                spellings.push(key.clone());
                spellings.len() - 1
            }
        };
        root.insert(&path, value, spelling)?;
    }
    Ok(root.into_value())
}

/// Strict percent-decoding with `+` as space; an escape that is not valid UTF-8 is an error.
fn decode(s: &str) -> Result<String, &'static str> {
    let s = s.replace('+', " ");
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let ok = bytes.get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
            if !ok {
                return Err("form body has an invalid percent-escape");
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    percent_encoding::percent_decode_str(&s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| "form body is not valid UTF-8")
}

/// qs decodes `%5B` and `%5D` (any case) in the whole string before splitting it.
pub fn unescape_brackets(s: &str) -> String {
    replace_ci(&replace_ci(s, "%5b", "["), "%5d", "]")
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

#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Key(String),
    Index(usize),
    Push,
}

/// qs's `parseObject` root rules over [`split_key`]. `None`: the key is dropped.
fn segments(key: &str, allow_dots: bool) -> Option<Vec<Seg>> {
    Some(
        split_key(key, allow_dots)?
            .into_iter()
            .map(|(text, bracketed)| match text.as_str() {
                "" if bracketed => Seg::Push,
                t if bracketed && is_index(t) => t.parse().map(Seg::Index).unwrap_or(Seg::Key(text)),
                _ => Seg::Key(text),
            })
            .collect(),
    )
}

/// qs's `splitKeyIntoSegments`: the parent before the first `[`, then the contents of up to
/// [`DEPTH`] balanced bracket groups, then the rest as one literal; each as `(text, bracketed)`.
/// `None` when qs drops the key (a parent or group named after an `Object.prototype` member).
pub fn split_key(key: &str, allow_dots: bool) -> Option<Vec<(String, bool)>> {
    let key = if allow_dots { dots_to_brackets(key) } else { key.to_string() };
    let mut raw: Vec<(String, bool)> = Vec::new(); // (text, was bracketed)
    let first = key.find('[');
    let parent = first.map_or(key.as_str(), |i| &key[..i]);
    if !parent.is_empty() {
        if PROTOTYPE_KEYS.contains(&parent) {
            return None;
        }
        raw.push((parent.to_string(), false));
    }
    let bytes = key.as_bytes();
    let mut open = first;
    let mut collected = 0;
    while let Some(o) = open.filter(|_| collected < DEPTH) {
        let mut level = 1;
        let mut close = None;
        let mut i = o + 1;
        while i < bytes.len() && close.is_none() {
            match bytes[i] {
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
            // Unterminated: the rest is one literal segment.
            raw.push((key[o..].to_string(), true));
            open = None;
            break;
        };
        let content = &key[o + 1..c];
        if PROTOTYPE_KEYS.contains(&content) {
            return None;
        }
        raw.push((content.to_string(), true));
        collected += 1;
        open = key[c + 1..].find('[').map(|j| j + c + 1);
    }
    if let Some(o) = open {
        // Past the depth limit, the remainder is one literal key.
        raw.push((key[o..].to_string(), true));
    }
    Some(raw)
}

/// `String(parseInt(s)) === s`, non-negative.
fn is_index(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0')) && s.len() < 10
}

/// `key.replace(/\.([^.[]+)/g, '[$1]')` (qs's `allowDots`).
pub fn dots_to_brackets(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    let mut rest = key;
    while let Some(i) = rest.find('.') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let n = after.find(['.', '[']).unwrap_or(after.len());
        if n == 0 {
            out.push('.');
            rest = after;
        } else {
            out.push('[');
            out.push_str(&after[..n]);
            out.push(']');
            rest = &after[n..];
        }
    }
    out.push_str(rest);
    out
}

#[derive(Debug)]
enum Node {
    /// A value, how many times it was given (qs combines repeats into an array), and which
    /// spelling of the key gave it.
    Leaf(String, usize, usize),
    Obj(Vec<(String, Node)>),
    /// Built by `[n]` indices (sparse, compacted in index order).
    Indexed(std::collections::BTreeMap<usize, Node>),
    /// Built by `[]` appends.
    Pushed(Vec<Node>),
}

impl Node {
    fn empty_for(seg: &Seg) -> Node {
        match seg {
            Seg::Key(_) => Node::Obj(Vec::new()),
            Seg::Index(_) => Node::Indexed(Default::default()),
            Seg::Push => Node::Pushed(Vec::new()),
        }
    }

    /// Sets `value` at `path` below this node.
    fn insert(&mut self, path: &[Seg], value: String, spelling: usize) -> Result<(), &'static str> {
        let Some((seg, rest)) = path.split_first() else { return Err("form field without a name") };
        if *seg == Seg::Push && !rest.is_empty() {
            // qs merges `a[][b]=1&a[][b]=2` element by element; other parsers append.
            return Err("form body nests fields under a list append (`[]`)");
        }
        let existing = match (&mut *self, seg) {
            (Node::Obj(fields), Seg::Key(k)) => fields.iter().position(|(name, _)| name == k),
            (Node::Indexed(items), Seg::Index(i)) if *i >= ARRAY_LIMIT => {
                return Err("form body indexes a list past qs's limit of 20");
            }
            (Node::Indexed(items), Seg::Index(i)) => items.contains_key(i).then_some(*i),
            (Node::Pushed(items), Seg::Push) if items.len() >= ARRAY_LIMIT => {
                return Err("form body lists more than qs's limit of 20 values");
            }
            (Node::Pushed(_), Seg::Push) => None,
            _ => return Err("form body uses one field with two different shapes"),
        };
        let child = match existing {
            Some(at) => self.child_mut(at),
            None => {
                return match rest.first() {
                    None => {
                        self.add_child(seg, Node::Leaf(value, 1, spelling));
                        Ok(())
                    }
                    Some(next) => self.add_child(seg, Node::empty_for(next)).insert(rest, value, spelling),
                };
            }
        };
        match (child, rest.is_empty()) {
            // qs combines repeats of one key but merges two spellings of a path (`a.b`, `a[b]`)
            // by other rules; no client needs the second.
            (Node::Leaf(_, _, first), true) if *first != spelling => {
                Err("form body gives one field under two spellings of its name")
            }
            (Node::Leaf(_, n, _), true) if *n >= ARRAY_LIMIT => {
                Err("form body repeats a field more than qs's limit of 20")
            }
            (Node::Leaf(v, n, _), true) if *v == value => {
                *n += 1;
                Ok(())
            }
            (Node::Leaf(..), true) => Err("form body gives one field two different values"),
            (_, true) | (Node::Leaf(..), false) => {
                Err("form body uses one field both as a value and as a list or object")
            }
            (child, false) => child.insert(rest, value, spelling),
        }
    }

    fn child_mut(&mut self, at: usize) -> &mut Node {
        match self {
            Node::Obj(fields) => &mut fields[at].1,
            Node::Indexed(items) => items.entry(at).or_insert_with(|| Node::Obj(Vec::new())),
            Node::Pushed(items) => &mut items[at],
            Node::Leaf(..) => self,
        }
    }

    fn add_child(&mut self, seg: &Seg, node: Node) -> &mut Node {
        match (self, seg) {
            (Node::Obj(fields), Seg::Key(k)) => {
                fields.push((k.clone(), node));
                let last = fields.len() - 1;
                &mut fields[last].1
            }
            (Node::Indexed(items), Seg::Index(i)) => items.entry(*i).or_insert(node),
            (Node::Pushed(items), _) => {
                items.push(node);
                let last = items.len() - 1;
                &mut items[last]
            }
            // `insert` matched the shapes before calling this.
            (me, _) => me,
        }
    }

    fn into_value(self) -> Value {
        match self {
            Node::Leaf(v, 1, _) => Value::String(v),
            // qs: `a=x&a=x` is `["x", "x"]`.
            Node::Leaf(v, n, _) => Value::Array(vec![Value::String(v); n]),
            Node::Obj(fields) => {
                Value::Object(fields.into_iter().map(|(k, v)| (k, v.into_value())).collect::<Map<_, _>>())
            }
            Node::Indexed(items) => Value::Array(items.into_values().map(Node::into_value).collect()),
            Node::Pushed(items) => Value::Array(items.into_iter().map(Node::into_value).collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_the_gateway_writes_read_back_as_parsed() {
        let v = serde_json::json!({"username": "a b&c=d", "o": {"k": ["p", "q"]}, "n": "5"});
        let back = parse_urlencoded(&crate::backend::fields::to_urlencoded(&v)).expect("parses");
        assert_eq!(back, v);
    }
    use serde_json::json;

    /// Rows checked against qs 6.15.3 (`qs.parse(s, {allowDots: true})`, as co-body calls it).
    #[test]
    fn urlencoded_bodies_parse_like_qs() {
        let rows: &[(&str, Value)] = &[
            ("refreshToken=abc", json!({"refreshToken": "abc"})),
            (
                "identifier=alice%40example.com&password=P%40ss+word",
                json!({"identifier": "alice@example.com", "password": "P@ss word"}),
            ),
            ("a[b]=c", json!({"a": {"b": "c"}})),
            ("a%5Bb%5D=c", json!({"a": {"b": "c"}})),
            ("a.b=c", json!({"a": {"b": "c"}})),
            ("a.b.c=d", json!({"a": {"b": {"c": "d"}}})),
            ("a[]=x&a[]=y", json!({"a": ["x", "y"]})),
            ("a[0]=x&a[1]=y", json!({"a": ["x", "y"]})),
            ("a[1]=y&a[0]=x", json!({"a": ["x", "y"]})),
            ("a[3]=x", json!({"a": ["x"]})),
            ("a[0][b]=1", json!({"a": [{"b": "1"}]})),
            ("a", json!({"a": ""})),
            ("a=", json!({"a": ""})),
            ("=x&&b=1&", json!({"b": "1"})),
            ("a=1&a=1", json!({"a": ["1", "1"]})),
            ("__proto__[x]=1&b=2", json!({"b": "2"})),
            ("a[constructor]=1&b=2", json!({"b": "2"})),
            ("a[b][c][d][e][f][g]=1", json!({"a": {"b": {"c": {"d": {"e": {"f": {"[g]": "1"}}}}}}})),
            ("a[b=1", json!({"a": {"[b": "1"}})),
            ("a[b]c=1", json!({"a": {"b": "1"}})),
            ("x=a%3Db%26c", json!({"x": "a=b&c"})),
            ("x=%E2%82%AC", json!({"x": "\u{20ac}"})),
            ("a[01]=x", json!({"a": {"01": "x"}})),
            ("0=x", json!({"0": "x"})),
        ];
        for (input, want) in rows {
            assert_eq!(parse_urlencoded(input).as_ref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn ambiguous_forms_are_refused() {
        for input in [
            "refreshToken=a&refreshToken=b",
            "a=1&a[b]=2",
            "a[b]=2&a=1",
            "a[0]=x&a[b]=y",
            "a[]=x&a[0]=y",
            "a[0]=x&a[0]=y",
            "a.b=1&a[b]=2",
            "a.b=1&a[b]=1",
            "a.b&a[b]=",
            "a[20]=x",
            "x=%FF",
            "x=%E2%82",
            "x=%zz",
            "x=100%",
        ] {
            assert!(parse_urlencoded(input).is_err(), "{input} must be refused");
        }
        let many: Vec<String> = (0..21).map(|i| format!("a[]={i}")).collect();
        assert!(parse_urlencoded(&many.join("&")).is_err(), "more than 20 list values");
        let fields: Vec<String> = (0..1001).map(|i| format!("f{i}=1")).collect();
        assert!(parse_urlencoded(&fields.join("&")).is_err(), "more than 1000 fields");
    }

    #[test]
    fn multipart_names_nest_without_dots() {
        let pairs = vec![("a.b".to_string(), "1".to_string()), ("c[d]".to_string(), "2".to_string())];
        assert_eq!(from_pairs(pairs, false), Ok(json!({"a.b": "1", "c": {"d": "2"}})));
    }
}
