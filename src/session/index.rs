//! The in-memory index the per-request check reads: fixed-size entries, no string and no heap
//! allocation per session.
//!
//! - **Tokens**: 64 shards of `16-byte SHA-256 prefix → Tok` (32 bytes a bucket in a SwissTable,
//!   hashed by passing the prefix through: it is already uniform). A false match needs a second
//!   preimage of 128 bits; the full hash stays on disk, where deletions need it. Sharding keeps
//!   a resize (a rehash of 1/64 of the tokens) from stalling every request.
//! - **Sessions**: slots in segments of 65 536, one column per field, every column an atomic,
//!   so a slot is written under the table lock and read through a shared reference. A slot
//!   carries a generation, bumped when it is freed: a token or alias entry that outlived its
//!   session can never name the slot's next tenant.
//! - **Listing columns** (login time, IPv4 or interned IPv6, country, device, threat score) sit
//!   beside them, so the admin's filtered page scans only the columns its filter names.
//! - **Users** are interned: a slot holds a 4-byte number; the user's row holds the name, the
//!   latest username and e-mail, and the user's session ids.
//!
//! - **Policy columns**: the role (interned), and where the session was last used from — a
//!   hash of the address, a hash of the agent, and the country, network and browser family
//!   packed in 64 bits — so the mid-session change check compares integers and looks the
//!   address up only when it changed.
//!
//! Names, agents, device ids and everything else a listing shows are read from the store for
//! the page only.

use crate::store::{SessionHot, TokenEntry, TokenHash, TokenKind};
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicI64, AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering::*};
use std::sync::{Arc, RwLock};

const SHARDS: usize = 64;
const SEG_BITS: u32 = 16;
const SEG_LEN: usize = 1 << SEG_BITS;

const REFRESH: u64 = 1 << 63;
const GEN_SHIFT: u32 = 48;
const GEN_MASK: u64 = 0x7fff;
const ROTATED_MASK: u64 = (1 << GEN_SHIFT) - 1;
/// Slot flags.
const IP_V6: u8 = 1;
const ODD_SID: u8 = 2;
/// The last address seen is not on disk yet.
const SEEN_PENDING: u8 = 4;
const NO_THREAT: u8 = u8::MAX;

/// The token table's key: the first 16 bytes of the token's SHA-256.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Key(pub [u8; 16]);

impl Key {
    pub fn of(h: &TokenHash) -> Key {
        let mut k = [0; 16];
        for (d, s) in k.iter_mut().zip(h) {
            *d = *s;
        }
        Key(k)
    }
    fn shard(&self) -> usize {
        self.0[8] as usize % SHARDS
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, h: &mut H) {
        let k = &self.0;
        h.write_u64(u64::from_le_bytes([k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7]]));
    }
}

/// Passes a uniform 64-bit value through (token prefixes, hashed aliases).
#[derive(Default)]
pub struct Pass(u64);
impl Hasher for Pass {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// splitmix64's finaliser, for session ids (sequential, not uniform).
#[derive(Default)]
pub struct Mix(u64);
impl Hasher for Mix {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(self.0 ^ u64::from(*b));
        }
    }
    fn write_u64(&mut self, v: u64) {
        let mut z = v.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        self.0 = z ^ (z >> 31);
    }
}

type TokMap = HashMap<Key, Tok, BuildHasherDefault<Pass>>;

/// One token: its session's slot and generation, kind, expiry and rotation, in 16 bytes.
#[derive(Clone, Copy, Debug)]
struct Tok {
    /// bit 63: refresh; bits 48–62: the slot's generation; bits 0–47: rotated-out time (unix
    /// ms, 0 = not rotated).
    meta: u64,
    slot: u32,
    /// Expiry in unix seconds (0 = none).
    exp: u32,
}

impl Tok {
    fn new(e: &TokenEntry, slot: u32, gen: u16) -> Tok {
        let mut meta = (u64::from(gen) & GEN_MASK) << GEN_SHIFT;
        if e.kind == TokenKind::Refresh {
            meta |= REFRESH;
        }
        if let Some(r) = e.rotated_at {
            meta |= (r.max(1) as u64).min(ROTATED_MASK);
        }
        let exp = e.exp.map_or(0, |s| s.clamp(1, i64::from(u32::MAX)) as u32);
        Tok { meta, slot, exp }
    }
    fn gen(&self) -> u16 {
        ((self.meta >> GEN_SHIFT) & GEN_MASK) as u16
    }
    fn entry(&self, session: u64) -> TokenEntry {
        let rotated = self.meta & ROTATED_MASK;
        TokenEntry {
            session,
            kind: if self.meta & REFRESH != 0 { TokenKind::Refresh } else { TokenKind::Access },
            exp: (self.exp != 0).then_some(i64::from(self.exp)),
            rotated_at: (rotated != 0).then_some(rotated as i64),
        }
    }
}

fn column<T: Default>() -> Box<[T]> {
    (0..SEG_LEN).map(|_| T::default()).collect()
}

/// 65 536 session slots, one column per field.
struct Segment {
    /// 0: a free slot.
    id: Box<[AtomicU64]>,
    gen: Box<[AtomicU16]>,
    user: Box<[AtomicU32]>,
    /// The 128 bits of a `sess_<32 hex>` id (other ids: in `Table::odd_sids`).
    sid_hi: Box<[AtomicU64]>,
    sid_lo: Box<[AtomicU64]>,
    /// When this instance learnt of the ending (unix ms); 0 while live.
    ended_at: Box<[AtomicI64]>,
    last_active: Box<[AtomicI64]>,
    /// The last-active time last queued for the disk.
    persisted: Box<[AtomicI64]>,
    // Listing columns.
    login: Box<[AtomicI64]>,
    /// The IPv4 address, or with `IP_V6` the number of an IPv6 address in `Table::v6`.
    ip: Box<[AtomicU32]>,
    /// Two ASCII letters, 0 = unknown.
    country: Box<[AtomicU16]>,
    /// 1 + the number of the device type in `Table::devices`; 0 = unknown.
    device: Box<[AtomicU8]>,
    threat: Box<[AtomicU8]>,
    flags: Box<[AtomicU8]>,
    // Policy columns.
    /// 1 + the number of the role in `Table::roles`; 0 = none known.
    role: Box<[AtomicU8]>,
    /// Where the session was last used from (see [`Place`]); 0 = not yet known.
    seen_place: Box<[AtomicU64]>,
    /// Hashes of the last address and agent (0 = not known).
    seen_ip: Box<[AtomicU32]>,
    seen_ua: Box<[AtomicU32]>,
    /// When a new address was last queued for the disk (unix seconds).
    seen_written: Box<[AtomicU32]>,
}

/// Bytes one slot occupies (hot columns, listing columns).
const HOT_SLOT_BYTES: usize = 8 + 2 + 4 + 16 + 8 + 8 + 8;
const LISTING_SLOT_BYTES: usize = 8 + 4 + 2 + 1 + 1 + 1;
const POLICY_SLOT_BYTES: usize = 1 + 8 + 4 + 4 + 4;

impl Segment {
    fn new() -> Segment {
        Segment {
            id: column(),
            gen: column(),
            user: column(),
            sid_hi: column(),
            sid_lo: column(),
            ended_at: column(),
            last_active: column(),
            persisted: column(),
            login: column(),
            ip: column(),
            country: column(),
            device: column(),
            threat: column(),
            flags: column(),
            role: column(),
            seen_place: column(),
            seen_ip: column(),
            seen_ua: column(),
            seen_written: column(),
        }
    }
}

/// A session in the index: a handle (id, slot, generation) with the two fields every caller
/// logs. Cheap to clone; its state is read through [`Index`].
#[derive(Debug, Clone)]
pub struct Live {
    pub id: u64,
    pub user_id: Arc<str>,
    pub sid: Sid,
    slot: u32,
    gen: u16,
}

/// A gateway session id: `sess_` + 32 hex digits held as 128 bits, or (imported) any other text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sid {
    Hex(u128),
    Other(Arc<str>),
}

impl Sid {
    pub fn parse(s: &str) -> Sid {
        match s.strip_prefix("sess_") {
            Some(h) if h.len() == 32 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) => {
                u128::from_str_radix(h, 16).map(Sid::Hex).unwrap_or_else(|_| Sid::Other(s.into()))
            }
            _ => Sid::Other(s.into()),
        }
    }
}

impl std::fmt::Display for Sid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sid::Hex(v) => write!(f, "sess_{v:032x}"),
            Sid::Other(s) => f.write_str(s),
        }
    }
}

struct UserRow {
    name: Arc<str>,
    username: Option<Box<str>>,
    email: Option<Box<str>>,
    sessions: Vec<u64>,
}

#[derive(Default)]
struct Users {
    ids: HashMap<Arc<str>, u32>,
    rows: Vec<Option<UserRow>>,
    free: Vec<u32>,
}

impl Users {
    fn intern(&mut self, name: &str, username: Option<&str>, email: Option<&str>, session: u64) -> u32 {
        let n = match self.ids.get(name) {
            Some(n) => *n,
            None => {
                let name: Arc<str> = name.into();
                let row = UserRow { name: name.clone(), username: None, email: None, sessions: vec![] };
                let n = match self.free.pop() {
                    Some(n) => {
                        if let Some(r) = self.rows.get_mut(n as usize) {
                            *r = Some(row);
                        }
                        n
                    }
                    None => {
                        self.rows.push(Some(row));
                        (self.rows.len() - 1) as u32
                    }
                };
                self.ids.insert(name, n);
                n
            }
        };
        if let Some(Some(row)) = self.rows.get_mut(n as usize) {
            if username.is_some() {
                row.username = username.map(Into::into);
            }
            if email.is_some() {
                row.email = email.map(Into::into);
            }
            row.sessions.push(session);
        }
        n
    }

    fn name(&self, n: u32) -> Arc<str> {
        match self.rows.get(n as usize) {
            Some(Some(r)) => r.name.clone(),
            _ => "".into(),
        }
    }

    fn release(&mut self, n: u32, session: u64) {
        let Some(slot) = self.rows.get_mut(n as usize) else { return };
        let Some(row) = slot else { return };
        row.sessions.retain(|s| *s != session);
        if row.sessions.is_empty() {
            self.ids.remove(&row.name);
            *slot = None;
            self.free.push(n);
        }
    }
}

#[derive(Default)]
struct Table {
    segs: Vec<Arc<Segment>>,
    free: Vec<u32>,
    /// Slots ever handed out.
    next: u32,
    by_id: HashMap<u64, u32, BuildHasherDefault<Mix>>,
    users: Users,
    /// Hashed backend session id → (slot, generation).
    aliases: HashMap<Key, (u32, u16), BuildHasherDefault<Pass>>,
    devices: Vec<Arc<str>>,
    v6: Vec<Ipv6Addr>,
    v6_ids: HashMap<Ipv6Addr, u32>,
    odd_sids: HashMap<u64, Arc<str>, BuildHasherDefault<Mix>>,
    roles: Vec<Arc<str>>,
    families: Vec<Arc<str>>,
}

impl Table {
    fn seg(&self, slot: u32) -> Option<(&Segment, usize)> {
        seg_of(&self.segs, slot)
    }

    /// The segment and offset of `live`'s slot, while it still holds `live`.
    fn of(&self, live: &Live) -> Option<(&Segment, usize)> {
        let (s, i) = self.seg(live.slot)?;
        let holds = s.id.get(i)?.load(Acquire) == live.id && s.gen.get(i)?.load(Relaxed) == live.gen;
        holds.then_some((s, i))
    }

    fn handle(&self, slot: u32) -> Option<Live> {
        let (s, i) = self.seg(slot)?;
        let id = s.id.get(i)?.load(Acquire);
        if id == 0 {
            return None;
        }
        let sid = if s.flags.get(i)?.load(Relaxed) & ODD_SID != 0 {
            Sid::Other(self.odd_sids.get(&id).cloned().unwrap_or_else(|| "".into()))
        } else {
            let hi = s.sid_hi.get(i)?.load(Relaxed);
            let lo = s.sid_lo.get(i)?.load(Relaxed);
            Sid::Hex((u128::from(hi) << 64) | u128::from(lo))
        };
        Some(Live {
            id,
            user_id: self.users.name(s.user.get(i)?.load(Relaxed)),
            sid,
            slot,
            gen: s.gen.get(i)?.load(Relaxed),
        })
    }

    /// The (session id, generation) an occupied slot holds, without building a handle.
    fn occupant(&self, slot: u32) -> Option<(u64, u16)> {
        let (s, i) = self.seg(slot)?;
        let id = s.id.get(i)?.load(Acquire);
        (id != 0).then(|| (id, s.gen.get(i).map_or(0, |g| g.load(Relaxed))))
    }

    /// Whether `live`'s session ended (a freed slot counts as ended: fail closed).
    fn ended(&self, live: &Live) -> bool {
        self.of(live).and_then(|(s, i)| s.ended_at.get(i)).is_none_or(|a| a.load(Acquire) != 0)
    }

    fn alloc(&mut self) -> u32 {
        if let Some(s) = self.free.pop() {
            return s;
        }
        let slot = self.next;
        if (slot as usize) >> SEG_BITS >= self.segs.len() {
            self.segs.push(Arc::new(Segment::new()));
        }
        self.next += 1;
        slot
    }

    fn device(&mut self, d: &str) -> u8 {
        intern(&mut self.devices, d)
    }

    fn ip(&mut self, ip: &str) -> (u32, u8) {
        match ip.parse::<IpAddr>() {
            Ok(IpAddr::V4(v4)) => (u32::from(v4), 0),
            Ok(IpAddr::V6(v6)) => {
                let next = self.v6.len() as u32;
                let n = *self.v6_ids.entry(v6).or_insert(next);
                if n == next {
                    self.v6.push(v6);
                }
                (n, IP_V6)
            }
            Err(_) => (0, 0),
        }
    }
}

/// 1 + the number of `name` in a small vocabulary (device types, roles, browser families),
/// added if new; 0 for an empty name, or once 254 are held (these are small closed sets in
/// practice: more means garbage, which then shares "unknown").
fn intern(names: &mut Vec<Arc<str>>, name: &str) -> u8 {
    if name.is_empty() {
        return 0;
    }
    if let Some(n) = names.iter().position(|x| &**x == name) {
        return n as u8 + 1;
    }
    if names.len() >= 254 {
        return 0;
    }
    names.push(name.into());
    names.len() as u8
}

fn interned(names: &[Arc<str>], n: u8) -> Option<Arc<str>> {
    n.checked_sub(1).and_then(|i| names.get(i as usize)).cloned()
}

/// FNV-1a of `bytes`, never 0 (0 means "not known" in the columns). Only equality is asked of
/// it: a collision makes a changed address or agent look unchanged for one request pair.
fn fnv(bytes: &[u8]) -> u32 {
    let h = bytes.iter().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193));
    h | 1
}

pub fn ip_hash(ip: IpAddr) -> u32 {
    match ip {
        IpAddr::V4(v4) => fnv(&v4.octets()),
        IpAddr::V6(v6) => fnv(&v6.octets()),
    }
}

pub fn ua_hash(ua: &str) -> u32 {
    fnv(ua.as_bytes())
}

/// Where a session was used from: country, network (ASN) and browser family, packed in 64
/// bits (bit 63 set: known).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Place {
    /// Two ASCII letters (0: unknown).
    pub country: u16,
    /// 0: unknown.
    pub asn: u32,
    /// An interned browser family (0: unknown).
    pub family: u8,
}

impl Place {
    const KNOWN: u64 = 1 << 63;

    fn pack(self) -> u64 {
        Place::KNOWN | u64::from(self.country) | (u64::from(self.asn) << 16) | (u64::from(self.family) << 48)
    }

    fn unpack(v: u64) -> Option<Place> {
        (v & Place::KNOWN != 0).then_some(Place { country: v as u16, asn: (v >> 16) as u32, family: (v >> 48) as u8 })
    }

    /// The country as two letters.
    pub fn country_code(&self) -> Option<String> {
        let [a, b] = self.country.to_be_bytes();
        (self.country != 0).then(|| String::from_utf8_lossy(&[a, b]).into_owned())
    }
}

/// What the index holds of where a session was last used from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastSeen {
    pub place: Option<Place>,
    pub ip_hash: u32,
    pub ua_hash: u32,
    /// When a new address was last queued for the disk (unix seconds).
    pub written: u32,
    /// A new address is held that is not on disk yet.
    pub pending: bool,
}

/// The segment and offset of `slot` in a snapshot of the segment list.
fn seg_of(segs: &[Arc<Segment>], slot: u32) -> Option<(&Segment, usize)> {
    let s = segs.get((slot >> SEG_BITS) as usize)?;
    Some((s, slot as usize & (SEG_LEN - 1)))
}

/// Applies `f` to a column's cell (in bounds by construction; `get` keeps a write-locked
/// section free of anything that can panic).
fn set<A>(column: &[A], i: usize, f: impl FnOnce(&A)) {
    if let Some(a) = column.get(i) {
        f(a)
    }
}

pub(crate) fn country_code(c: &str) -> u16 {
    match c.as_bytes() {
        [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
            (u16::from(a.to_ascii_uppercase()) << 8) | u16::from(b.to_ascii_uppercase())
        }
        _ => 0,
    }
}

fn alias_key(alias: &str) -> Key {
    Key::of(&super::tokens::hash(alias))
}

/// How a listing is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    LoginTime,
    LastActive,
    Id,
    UserId,
}

/// One admin listing: filters, order and the page.
#[derive(Debug, Clone)]
pub struct Query {
    pub active: Option<bool>,
    /// A user id, or the latest username or e-mail seen for one.
    pub user: Option<String>,
    pub ip: Option<String>,
    pub device: Option<String>,
    pub country: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub min_threat: Option<u32>,
    pub sort: SortKey,
    pub desc: bool,
    pub offset: usize,
    pub limit: usize,
}

impl Default for Query {
    /// Every session, newest login first, the first 25.
    fn default() -> Query {
        Query {
            active: None,
            user: None,
            ip: None,
            device: None,
            country: None,
            since: None,
            until: None,
            min_threat: None,
            sort: SortKey::LoginTime,
            desc: true,
            offset: 0,
            limit: 25,
        }
    }
}

/// Counts over every session in memory (statistics, probes).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Overview {
    pub total: usize,
    pub active: usize,
    /// Active and not idle.
    pub online: usize,
    pub by_device: BTreeMap<String, u64>,
    /// Threat scores of active sessions in buckets of 20.
    pub threat: [u64; 5],
}

/// Bytes the index holds, by part (capacity, not length: what the allocator gave).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Memory {
    pub token_table: usize,
    pub session_table: usize,
    pub listing_columns: usize,
    pub id_map: usize,
    pub users: usize,
    pub aliases: usize,
}

impl Memory {
    pub fn total(&self) -> usize {
        self.parts().iter().map(|(_, b)| b).sum()
    }

    /// (`index_bytes{part}` label, bytes).
    pub fn parts(&self) -> [(&'static str, usize); 6] {
        [
            ("token_table", self.token_table),
            ("session_table", self.session_table),
            ("listing_columns", self.listing_columns),
            ("id_map", self.id_map),
            ("users", self.users),
            ("aliases", self.aliases),
        ]
    }
}

/// Bytes a SwissTable of `cap` buckets of `T` occupies (one control byte a bucket).
fn table_bytes<T>(cap: usize) -> usize {
    if cap == 0 {
        return 0;
    }
    let buckets = (cap * 8 / 7).next_power_of_two();
    buckets * (std::mem::size_of::<T>() + 1)
}

pub struct Index {
    tokens: Box<[RwLock<TokMap>]>,
    table: RwLock<Table>,
    /// Bumped whenever a session ends or leaves the index (local or replicated endings alike:
    /// both go through [`Index::mark_ended`]), so long-lived exchanges waiting on a session
    /// wake and look.
    endings: tokio::sync::watch::Sender<u64>,
}

impl Default for Index {
    fn default() -> Index {
        Index {
            tokens: (0..SHARDS).map(|_| RwLock::default()).collect(),
            table: RwLock::default(),
            endings: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl Index {
    fn table(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        crate::sync::read(&self.table)
    }

    /// The segments and the slot count, for a scan that does not hold the table lock.
    fn segments(&self) -> (Vec<Arc<Segment>>, u32) {
        let t = self.table();
        (t.segs.clone(), t.next)
    }

    fn shard(&self, k: &Key) -> Option<&RwLock<TokMap>> {
        self.tokens.get(k.shard())
    }

    /// Adds a session from its record's leading fields (or, if its id is already here, returns
    /// the one held) with its tokens. `last_active` may be later than the record's (the
    /// touches tree); an ended record counts as ended since `learnt_ended_at`, when this
    /// instance learnt of it.
    pub fn insert(
        &self,
        row: &SessionHot<'_>,
        last_active: i64,
        learnt_ended_at: i64,
        tokens: &[(TokenHash, TokenEntry)],
    ) -> Live {
        let live = {
            let mut t = crate::sync::write(&self.table);
            let existing = t.by_id.get(&row.id).copied().and_then(|slot| t.handle(slot));
            match existing {
                Some(live) => live,
                None => self.fill(&mut t, row, last_active, row.logout_time.map(|_| learnt_ended_at.max(1))),
            }
        };
        for a in &row.aliases {
            self.add_alias(&live, a);
        }
        self.put_tokens(&live, tokens);
        live
    }

    fn fill(&self, t: &mut Table, row: &SessionHot<'_>, last_active: i64, ended_at: Option<i64>) -> Live {
        let slot = t.alloc();
        let user = t.users.intern(row.user_id, row.username, row.email, row.id);
        let device = t.device(row.device_type);
        let role = row.role.map_or(0, |r| intern(&mut t.roles, r));
        let place = match &row.seen {
            Some(seen) => Place {
                country: seen.country_code.as_deref().map_or(0, country_code),
                asn: seen.asn.unwrap_or(0),
                family: intern(&mut t.families, &seen.family),
            },
            None => Place {
                country: row.geo.as_ref().and_then(|g| g.country_code.as_deref()).map_or(0, country_code),
                asn: row.geo.as_ref().and_then(|g| g.asn).unwrap_or(0),
                // "Unknown" is both "no agent" and "an agent woothee does not know": no baseline.
                family: match crate::device::family_of(row.browser_name) {
                    f if f == "Unknown" => 0,
                    f => intern(&mut t.families, &f),
                },
            },
        };
        let seen_ip = row.seen.as_ref().map_or(row.ip, |s| s.ip.as_str()).parse().map_or(0, ip_hash);
        let (ip, mut flags) = t.ip(row.ip);
        let sid = Sid::parse(row.sid);
        let (hi, lo) = match &sid {
            Sid::Hex(v) => ((v >> 64) as u64, *v as u64),
            Sid::Other(s) => {
                flags |= ODD_SID;
                t.odd_sids.insert(row.id, s.clone());
                (0, 0)
            }
        };
        t.by_id.insert(row.id, slot);
        let name = t.users.name(user);
        let mut gen = 0;
        if let Some((s, i)) = t.seg(slot) {
            set(&s.sid_hi, i, |a| a.store(hi, Relaxed));
            set(&s.sid_lo, i, |a| a.store(lo, Relaxed));
            set(&s.user, i, |a| a.store(user, Relaxed));
            set(&s.ended_at, i, |a| a.store(ended_at.unwrap_or(0), Relaxed));
            set(&s.last_active, i, |a| a.store(last_active, Relaxed));
            set(&s.persisted, i, |a| a.store(last_active, Relaxed));
            set(&s.login, i, |a| a.store(row.login_time, Relaxed));
            set(&s.ip, i, |a| a.store(ip, Relaxed));
            let country = row.geo.as_ref().and_then(|g| g.country_code.as_deref()).map_or(0, country_code);
            set(&s.country, i, |a| a.store(country, Relaxed));
            set(&s.device, i, |a| a.store(device, Relaxed));
            let threat = row.threat_score.map_or(NO_THREAT, |v| v.min(100) as u8);
            set(&s.threat, i, |a| a.store(threat, Relaxed));
            set(&s.flags, i, |a| a.store(flags, Relaxed));
            set(&s.role, i, |a| a.store(role, Relaxed));
            set(&s.seen_place, i, |a| a.store(place.pack(), Relaxed));
            set(&s.seen_ip, i, |a| a.store(seen_ip, Relaxed));
            set(&s.seen_ua, i, |a| a.store(0, Relaxed));
            let written = row.seen.as_ref().map_or(row.login_time, |s| s.at) / 1000;
            set(&s.seen_written, i, |a| a.store(written.clamp(0, i64::from(u32::MAX)) as u32, Relaxed));
            gen = s.gen.get(i).map_or(0, |g| g.load(Relaxed));
            // Published last: a reader that sees the id sees the fields.
            set(&s.id, i, |a| a.store(row.id, Release));
        }
        Live { id: row.id, user_id: name, sid, slot, gen }
    }

    /// The session with this id.
    pub fn get(&self, id: u64) -> Option<Live> {
        let t = self.table();
        let slot = *t.by_id.get(&id)?;
        t.handle(slot)
    }

    /// A token's entry, its session, and whether that session ended: the per-request lookup
    /// (one shard lock, one table lock).
    pub fn check(&self, hash: &TokenHash) -> Option<(Live, TokenEntry, bool)> {
        let key = Key::of(hash);
        let tok = *crate::sync::read(self.shard(&key)?).get(&key)?;
        let t = self.table();
        let live = t.handle(tok.slot).filter(|l| l.gen == tok.gen())?;
        let ended = t.ended(&live);
        let entry = tok.entry(live.id);
        Some((live, entry, ended))
    }

    /// A token's entry, if it is indexed (no handle built: rotations, imports and replication
    /// ask this per token).
    pub fn token(&self, hash: &TokenHash) -> Option<TokenEntry> {
        let key = Key::of(hash);
        let tok = *crate::sync::read(self.shard(&key)?).get(&key)?;
        let (id, gen) = self.table().occupant(tok.slot)?;
        (gen == tok.gen()).then(|| tok.entry(id))
    }

    /// Indexes (or updates) tokens of `live`'s session.
    pub fn put_tokens(&self, live: &Live, entries: &[(TokenHash, TokenEntry)]) {
        for (h, e) in entries {
            let key = Key::of(h);
            if let Some(shard) = self.shard(&key) {
                crate::sync::write(shard).insert(key, Tok::new(e, live.slot, live.gen));
            }
        }
    }

    /// Indexes tokens loaded from the store, each under the session its entry names (a token
    /// of a session not in the index is dropped). The shards are sized for them first, so a
    /// cold start does not rehash its way there.
    pub fn load_tokens(&self, tokens: &[(TokenHash, TokenEntry)]) {
        for shard in self.tokens.iter() {
            crate::sync::write(shard).reserve(tokens.len().div_ceil(SHARDS));
        }
        let t = self.table();
        for (h, e) in tokens {
            let Some(slot) = t.by_id.get(&e.session).copied() else { continue };
            let Some((_, gen)) = t.occupant(slot) else { continue };
            let key = Key::of(h);
            if let Some(shard) = self.shard(&key) {
                crate::sync::write(shard).insert(key, Tok::new(e, slot, gen));
            }
        }
    }

    pub fn remove_tokens(&self, hashes: &[TokenHash]) {
        for h in hashes {
            let key = Key::of(h);
            if let Some(shard) = self.shard(&key) {
                crate::sync::write(shard).remove(&key);
            }
        }
    }

    /// Removes a session with its tokens and aliases; its slot is reused under a new generation.
    pub fn remove_session(&self, id: u64, aliases: &[String], tokens: &[TokenHash]) {
        // Tokens first: a lookup between the two steps finds no token rather than a free slot.
        self.remove_tokens(tokens);
        let mut t = crate::sync::write(&self.table);
        let Some(slot) = t.by_id.remove(&id) else { return };
        for a in aliases {
            let k = alias_key(a);
            if t.aliases.get(&k).is_some_and(|(s, _)| *s == slot) {
                t.aliases.remove(&k);
            }
        }
        t.odd_sids.remove(&id);
        let mut user = None;
        if let Some((s, i)) = t.seg(slot) {
            user = s.user.get(i).map(|u| u.load(Relaxed));
            set(&s.id, i, |a| a.store(0, Release));
            set(&s.gen, i, |g| g.store(g.load(Relaxed).wrapping_add(1) & GEN_MASK as u16, Relaxed));
        }
        if let Some(u) = user {
            t.users.release(u, id);
        }
        t.free.push(slot);
        drop(t);
        self.ended_one();
    }

    /// Names `live`'s session as the backend session `alias`.
    pub fn add_alias(&self, live: &Live, alias: &str) {
        crate::sync::write(&self.table).aliases.insert(alias_key(alias), (live.slot, live.gen));
    }

    /// The session a backend session id belongs to.
    pub fn by_alias(&self, alias: &str) -> Option<Live> {
        let t = self.table();
        let (slot, gen) = *t.aliases.get(&alias_key(alias))?;
        t.handle(slot).filter(|l| l.gen == gen)
    }

    /// Whether the session ended (a handle whose slot was freed counts as ended: fail closed).
    pub fn is_ended(&self, live: &Live) -> bool {
        self.table().ended(live)
    }

    /// When this instance learnt the session ended (unix ms; 0 while live).
    pub fn ended_at(&self, live: &Live) -> i64 {
        self.table().of(live).and_then(|(s, i)| s.ended_at.get(i).map(|a| a.load(Acquire))).unwrap_or(0)
    }

    /// Marks the session ended at `now`; `false` if it already was (or is gone).
    pub fn mark_ended(&self, live: &Live, now: i64) -> bool {
        let marked = {
            let t = self.table();
            let Some(a) = t.of(live).and_then(|(s, i)| s.ended_at.get(i)) else { return false };
            a.compare_exchange(0, now.max(1), AcqRel, Acquire).is_ok()
        };
        if marked {
            self.ended_one();
        }
        marked
    }

    fn ended_one(&self) {
        self.endings.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that sees a change after every ending (see [`Index::endings`]'s field).
    pub fn endings(&self) -> tokio::sync::watch::Receiver<u64> {
        self.endings.subscribe()
    }

    /// When the session began (unix ms; 0 if it is gone).
    pub fn login_time(&self, live: &Live) -> i64 {
        self.table().of(live).and_then(|(s, i)| s.login.get(i).map(|a| a.load(Relaxed))).unwrap_or(0)
    }

    /// The role the session was opened with, if one is known.
    pub fn role(&self, live: &Live) -> Option<Arc<str>> {
        let t = self.table();
        let n = t.of(live).and_then(|(s, i)| s.role.get(i).map(|a| a.load(Relaxed)))?;
        interned(&t.roles, n)
    }

    /// Where the session was last used from, as held here.
    pub fn last_seen(&self, live: &Live) -> Option<LastSeen> {
        let t = self.table();
        let (s, i) = t.of(live)?;
        Some(LastSeen {
            place: Place::unpack(s.seen_place.get(i)?.load(Relaxed)),
            ip_hash: s.seen_ip.get(i)?.load(Relaxed),
            ua_hash: s.seen_ua.get(i)?.load(Relaxed),
            written: s.seen_written.get(i)?.load(Relaxed),
            pending: s.flags.get(i)?.load(Relaxed) & SEEN_PENDING != 0,
        })
    }

    /// Records where the session was just used from. `place` replaces the known place when
    /// given; `written` the time a new address was last queued for the disk.
    pub fn set_last_seen(
        &self,
        live: &Live,
        ip_hash: u32,
        ua_hash: u32,
        place: Option<Place>,
        written: Option<u32>,
        pending: bool,
    ) {
        let t = self.table();
        let Some((s, i)) = t.of(live) else { return };
        set(&s.seen_ip, i, |a| a.store(ip_hash, Relaxed));
        set(&s.seen_ua, i, |a| a.store(ua_hash, Relaxed));
        if let Some(p) = place {
            set(&s.seen_place, i, |a| a.store(p.pack(), Relaxed));
        }
        if let Some(w) = written {
            set(&s.seen_written, i, |a| a.store(w, Relaxed));
        }
        set(&s.flags, i, |a| {
            if pending {
                a.fetch_or(SEEN_PENDING, Relaxed);
            } else {
                a.fetch_and(!SEEN_PENDING, Relaxed);
            }
        });
    }

    /// The number of a browser family (interned on first sight).
    pub fn family(&self, name: &str) -> u8 {
        let t = self.table();
        if let Some(n) = t.families.iter().position(|x| &**x == name) {
            return n as u8 + 1;
        }
        drop(t);
        intern(&mut crate::sync::write(&self.table).families, name)
    }

    /// The name of a browser family number.
    pub fn family_name(&self, n: u8) -> Option<Arc<str>> {
        interned(&self.table().families, n)
    }

    /// Sets the threat score shown for the session (a re-score).
    pub fn set_threat(&self, live: &Live, score: u32) {
        if let Some((s, i)) = self.table().of(live) {
            set(&s.threat, i, |a| a.store(score.min(100) as u8, Relaxed));
        }
    }

    pub fn last_active(&self, live: &Live) -> i64 {
        self.table().of(live).and_then(|(s, i)| s.last_active.get(i).map(|a| a.load(Relaxed))).unwrap_or(0)
    }

    /// Raises last-active (and, with `persisted`, the time known to be on disk) to `ms`.
    pub fn seen(&self, live: &Live, ms: i64, persisted: bool) {
        let t = self.table();
        if let Some((s, i)) = t.of(live) {
            set(&s.last_active, i, |a| {
                a.fetch_max(ms, Relaxed);
            });
            if persisted {
                set(&s.persisted, i, |a| {
                    a.fetch_max(ms, Relaxed);
                });
            }
        }
    }

    /// Records activity at `now`. Returns the previous persisted time when a disk write is due
    /// (at most once per `interval_ms`); the caller hands it back with [`Index::unpersist`] if
    /// the write could not be queued.
    pub fn touch(&self, live: &Live, now: i64, interval_ms: i64) -> Option<i64> {
        let t = self.table();
        let (s, i) = t.of(live)?;
        s.last_active.get(i)?.fetch_max(now, Relaxed);
        let p = s.persisted.get(i)?;
        let before = p.load(Relaxed);
        (now - before >= interval_ms && p.compare_exchange(before, now, Relaxed, Relaxed).is_ok()).then_some(before)
    }

    pub fn unpersist(&self, live: &Live, before: i64) {
        if let Some(p) = self.table().of(live).and_then(|(s, i)| s.persisted.get(i)) {
            p.store(before, Relaxed);
        }
    }

    /// Ids of a user's sessions.
    pub fn user_sessions(&self, user_id: &str) -> Vec<u64> {
        let t = self.table();
        let Some(n) = t.users.ids.get(user_id) else { return vec![] };
        match t.users.rows.get(*n as usize) {
            Some(Some(r)) => r.sessions.clone(),
            _ => vec![],
        }
    }

    /// Every session id, ascending.
    pub fn ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.table().by_id.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// (sessions, tokens).
    pub fn len(&self) -> (usize, usize) {
        let sessions = self.table().by_id.len();
        let tokens = self.tokens.iter().map(|s| crate::sync::read(s).len()).sum();
        (sessions, tokens)
    }

    /// The token prefixes of every ended session, with when this instance learnt of the ending.
    pub fn ended_tokens(&self) -> Vec<([u8; 16], i64)> {
        let t = self.table();
        let mut out = Vec::new();
        for shard in self.tokens.iter() {
            for (k, tok) in crate::sync::read(shard).iter() {
                let (Some((_, gen)), Some((s, i))) = (t.occupant(tok.slot), t.seg(tok.slot)) else { continue };
                let ended = s.ended_at.get(i).map_or(0, |a| a.load(Acquire));
                if gen == tok.gen() && ended != 0 {
                    out.push((k.0, ended));
                }
            }
        }
        out
    }

    /// Counts over every session.
    pub fn overview(&self, now: i64, idle_ms: i64) -> Overview {
        let (segs, next, total, devices) = {
            let t = self.table();
            (t.segs.clone(), t.next, t.by_id.len(), t.devices.clone())
        };
        let mut o = Overview { total, ..Default::default() };
        let mut by_device = [0u64; 256];
        for slot in 0..next {
            let Some((s, i)) = seg_of(&segs, slot) else { break };
            let (Some(id), Some(ended)) = (s.id.get(i), s.ended_at.get(i)) else { continue };
            if id.load(Acquire) == 0 || ended.load(Relaxed) != 0 {
                continue;
            }
            o.active += 1;
            if s.last_active.get(i).is_some_and(|a| now - a.load(Relaxed) <= idle_ms) {
                o.online += 1;
            }
            if let Some(d) = s.device.get(i) {
                by_device[d.load(Relaxed) as usize] += 1;
            }
            match s.threat.get(i).map(|a| a.load(Relaxed)) {
                Some(NO_THREAT) | None => {}
                Some(v) => o.threat[(v as usize / 20).min(4)] += 1,
            }
        }
        for (n, count) in by_device.iter().enumerate().filter(|(_, c)| **c > 0) {
            let name = n.checked_sub(1).and_then(|d| devices.get(d)).map_or("unknown".to_string(), |d| d.to_string());
            *o.by_device.entry(name).or_default() += count;
        }
        o
    }

    /// Active sessions whose last activity lies more than `idle_ms` before `now`.
    pub fn idle(&self, now: i64, idle_ms: i64) -> Vec<u64> {
        let (segs, next) = self.segments();
        let mut out = Vec::new();
        for slot in 0..next {
            let Some((s, i)) = seg_of(&segs, slot) else { break };
            let (Some(id), Some(ended), Some(last)) = (s.id.get(i), s.ended_at.get(i), s.last_active.get(i)) else {
                continue;
            };
            let id = id.load(Acquire);
            if id != 0 && ended.load(Relaxed) == 0 && now - last.load(Relaxed) > idle_ms {
                out.push(id);
            }
        }
        out
    }

    /// One page of sessions matching `q`, and how many match in all.
    pub fn select(&self, q: &Query) -> (usize, Vec<u64>) {
        let t = self.table();
        let users: Option<Vec<u32>> = q.user.as_deref().map(|u| {
            let mut v: Vec<u32> = t
                .users
                .rows
                .iter()
                .enumerate()
                .filter_map(|(n, r)| r.as_ref().map(|r| (n, r)))
                .filter(|(_, r)| &*r.name == u || r.username.as_deref() == Some(u) || r.email.as_deref() == Some(u))
                .map(|(n, _)| n as u32)
                .collect();
            v.sort_unstable();
            v
        });
        let ip: Option<Option<(u32, u8)>> = q.ip.as_deref().map(|s| match s.parse::<IpAddr>() {
            Ok(IpAddr::V4(v4)) => Some((u32::from(v4), 0)),
            Ok(IpAddr::V6(v6)) => t.v6_ids.get(&v6).map(|n| (*n, IP_V6)),
            Err(_) => None,
        });
        let device: Option<Option<u8>> =
            q.device.as_deref().map(|d| t.devices.iter().position(|x| &**x == d).map(|n| n as u8 + 1));
        let country = q.country.as_deref().map(country_code);
        if users.as_ref().is_some_and(Vec::is_empty) || matches!(ip, Some(None)) || matches!(device, Some(None)) {
            return (0, vec![]);
        }
        // Ranks of user names, for ordering by user id.
        let rank: Vec<u32> = if q.sort == SortKey::UserId {
            let mut order: Vec<(Arc<str>, u32)> = t
                .users
                .rows
                .iter()
                .enumerate()
                .filter_map(|(n, r)| r.as_ref().map(|r| (r.name.clone(), n as u32)))
                .collect();
            order.sort();
            let mut rank = vec![0; t.users.rows.len()];
            for (pos, (_, n)) in order.iter().enumerate() {
                if let Some(r) = rank.get_mut(*n as usize) {
                    *r = pos as u32;
                }
            }
            rank
        } else {
            vec![]
        };
        // Scan without the table lock (segments never move; the columns are atomics): a long
        // scan must not hold back a login's write lock, and with it every request's check.
        let (segs, next) = (t.segs.clone(), t.next);
        drop(t);
        let want = q.offset.saturating_add(q.limit);
        // Keeps the `want` best (key, id) pairs: a max-heap whose top is the worst kept.
        let mut heap: BinaryHeap<(i64, u64)> = BinaryHeap::with_capacity(want.min(1 << 16) + 1);
        let mut total = 0;
        // Newest slots first for a descending order: slots are handed out in creation order
        // (reused ones aside), so the heap fills with the page at once and later rows are one
        // comparison each.
        let count = segs.len();
        for m in 0..count {
            let n = if q.desc { count - 1 - m } else { m };
            let Some(s) = segs.get(n) else { continue };
            let base = n << SEG_BITS;
            let end = (next as usize).saturating_sub(base).min(SEG_LEN);
            for j in 0..end {
                let i = if q.desc { end - 1 - j } else { j };
                let id = s.id[i].load(Acquire);
                if id == 0 {
                    continue;
                }
                if let Some(a) = q.active {
                    if (s.ended_at[i].load(Relaxed) == 0) != a {
                        continue;
                    }
                }
                let login = s.login[i].load(Relaxed);
                if q.since.is_some_and(|v| login < v) || q.until.is_some_and(|v| login >= v) {
                    continue;
                }
                if let Some(c) = country {
                    if s.country[i].load(Relaxed) != c || c == 0 {
                        continue;
                    }
                }
                if let Some(Some((v, f))) = ip {
                    if s.ip[i].load(Relaxed) != v || s.flags[i].load(Relaxed) & IP_V6 != f {
                        continue;
                    }
                }
                if let Some(Some(d)) = device {
                    if s.device[i].load(Relaxed) != d {
                        continue;
                    }
                }
                if let Some(m) = q.min_threat {
                    let v = s.threat[i].load(Relaxed);
                    if v == NO_THREAT || u32::from(v) < m {
                        continue;
                    }
                }
                let user = s.user[i].load(Relaxed);
                if let Some(us) = &users {
                    if us.binary_search(&user).is_err() {
                        continue;
                    }
                }
                total += 1;
                if want == 0 {
                    continue;
                }
                let key = match q.sort {
                    SortKey::LoginTime => login,
                    SortKey::LastActive => s.last_active[i].load(Relaxed),
                    SortKey::Id => 0,
                    SortKey::UserId => i64::from(rank.get(user as usize).copied().unwrap_or(0)),
                };
                let item = if q.desc { (key.wrapping_neg(), !id) } else { (key, id) };
                if heap.len() < want {
                    heap.push(item);
                } else if heap.peek().is_some_and(|top| item < *top) {
                    heap.pop();
                    heap.push(item);
                }
            }
        }
        let mut kept = heap.into_sorted_vec();
        let ids = kept.drain(..).skip(q.offset).map(|(_, id)| if q.desc { !id } else { id }).collect();
        (total, ids)
    }

    /// What the index occupies, by part.
    pub fn memory(&self) -> Memory {
        let t = self.table();
        let token_table = self.tokens.iter().map(|s| table_bytes::<(Key, Tok)>(crate::sync::read(s).capacity())).sum();
        let slots = t.segs.len() * SEG_LEN;
        let users = table_bytes::<(Arc<str>, u32)>(t.users.ids.capacity())
            + t.users.rows.capacity() * std::mem::size_of::<Option<UserRow>>()
            + t.users
                .rows
                .iter()
                .flatten()
                .map(|r| {
                    16 + r.name.len()
                        + r.username.as_ref().map_or(0, |s| s.len())
                        + r.email.as_ref().map_or(0, |s| s.len())
                        + r.sessions.capacity() * 8
                })
                .sum::<usize>();
        Memory {
            token_table,
            session_table: slots * (HOT_SLOT_BYTES + POLICY_SLOT_BYTES)
                + t.free.capacity() * 4
                + table_bytes::<(u64, Arc<str>)>(t.odd_sids.capacity()),
            listing_columns: slots * LISTING_SLOT_BYTES
                + t.v6.capacity() * 16
                + table_bytes::<(Ipv6Addr, u32)>(t.v6_ids.capacity()),
            id_map: table_bytes::<(u64, u32)>(t.by_id.capacity()),
            users,
            aliases: table_bytes::<(Key, (u32, u16))>(t.aliases.capacity()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SessionRecord;

    fn h(n: u32) -> TokenHash {
        super::super::tokens::hash(&format!("token-{n}"))
    }

    /// A record as the tests index it: user, sid and aliases as given, a login at `id × 10`.
    fn record(id: u64, user: &str, sid: &str, aliases: &[String]) -> SessionRecord {
        SessionRecord {
            sid: sid.into(),
            username: Some("name".into()),
            ip: "10.0.0.1".into(),
            device_type: "desktop".into(),
            login_time: id as i64 * 10,
            last_active: id as i64 * 10,
            threat_score: Some(id as u32),
            geo: Some(crate::geo::GeoInfo { country_code: Some("de".into()), ..Default::default() }),
            aliases: aliases.to_vec(),
            ..SessionRecord::blank(id, user)
        }
    }

    fn insert(idx: &Index, r: &SessionRecord, tokens: &[(TokenHash, TokenEntry)]) -> Live {
        idx.insert(&r.hot(), r.last_active, 0, tokens)
    }

    fn access(session: u64) -> TokenEntry {
        TokenEntry { session, kind: TokenKind::Access, exp: Some(1_900_000_000), rotated_at: None }
    }

    #[test]
    fn entries_are_small() {
        assert_eq!(std::mem::size_of::<(Key, Tok)>(), 32);
        assert_eq!(std::mem::size_of::<(u64, u32)>(), 16);
    }

    #[test]
    fn a_token_round_trips_its_entry_and_names_its_session() {
        let idx = Index::default();
        let sid = format!("sess_{:032x}", 0xabcdef_u128);
        let live = insert(&idx, &record(7, "alice", &sid, &[]), &[(h(1), access(7))]);
        let rotated =
            TokenEntry { session: 7, kind: TokenKind::Refresh, exp: None, rotated_at: Some(1_700_000_000_123) };
        idx.put_tokens(&live, &[(h(2), rotated)]);
        let (l, e, ended) = idx.check(&h(1)).expect("indexed");
        assert!(!ended);
        assert_eq!((l.id, &*l.user_id, l.sid.to_string()), (7, "alice", sid));
        assert_eq!(e, access(7));
        assert_eq!(idx.token(&h(2)), Some(rotated));
        assert!(idx.check(&h(3)).is_none());
        assert_eq!(Sid::parse("imported-42").to_string(), "imported-42");
        assert_eq!(
            Sid::parse("sess_ABCDEF00000000000000000000000000"),
            Sid::Other("sess_ABCDEF00000000000000000000000000".into())
        );
    }

    #[test]
    fn a_freed_slot_never_answers_for_its_next_tenant() {
        let idx = Index::default();
        let aliases = vec!["bs-1".to_string()];
        let old = insert(&idx, &record(1, "alice", "sess_x", &aliases), &[(h(1), access(1))]);
        assert!(idx.mark_ended(&old, 5));
        assert!(!idx.mark_ended(&old, 6), "once");
        // A stale entry left behind (the store's list of tokens missed it) must not name the
        // slot's next session.
        idx.remove_session(1, &aliases, &[]);
        let new = insert(&idx, &record(2, "bob", "sess_y", &[]), &[(h(2), access(2))]);
        assert!(idx.check(&h(1)).is_none(), "the old token names no session");
        assert!(idx.by_alias("bs-1").is_none());
        assert!(idx.is_ended(&old), "a handle of a removed session reads as ended");
        assert!(!idx.is_ended(&new));
        assert_eq!(idx.user_sessions("alice"), Vec::<u64>::new());
        assert_eq!(idx.user_sessions("bob"), vec![2]);
        assert_eq!(idx.len(), (1, 2));
    }

    #[test]
    fn touch_asks_for_a_disk_write_once_per_interval() {
        let idx = Index::default();
        let live = insert(&idx, &record(1, "u", "s", &[]), &[]);
        assert_eq!(idx.touch(&live, 10, 100), None, "persisted at 10 already");
        assert_eq!(idx.touch(&live, 200, 100), Some(10));
        assert_eq!(idx.touch(&live, 250, 100), None);
        idx.unpersist(&live, 10);
        assert_eq!(idx.touch(&live, 260, 100), Some(10));
        assert_eq!(idx.last_active(&live), 260);
    }

    #[test]
    fn select_filters_counts_and_pages_in_order() {
        let idx = Index::default();
        for id in 1..=50u64 {
            let mut r = record(id, if id % 2 == 0 { "even" } else { "odd" }, "s", &[]);
            r.ip = format!("10.0.0.{}", id % 5);
            r.device_type = if id % 3 == 0 { "mobile" } else { "desktop" }.into();
            let live = insert(&idx, &r, &[]);
            if id > 40 {
                idx.mark_ended(&live, 1);
            }
        }
        let q = |edit: &dyn Fn(&mut Query)| {
            let mut q = Query { limit: 3, ..Query::default() };
            edit(&mut q);
            idx.select(&q)
        };
        assert_eq!(q(&|_| {}), (50, vec![50, 49, 48]));
        assert_eq!(q(&|q| q.offset = 3), (50, vec![47, 46, 45]));
        assert_eq!(q(&|q| q.active = Some(true)), (40, vec![40, 39, 38]));
        assert_eq!(q(&|q| q.active = Some(false)).0, 10);
        assert_eq!(q(&|q| q.user = Some("even".into())), (25, vec![50, 48, 46]));
        assert_eq!(q(&|q| q.user = Some("name".into())).0, 50, "by username");
        assert_eq!(q(&|q| q.user = Some("nobody".into())), (0, vec![]));
        assert_eq!(q(&|q| q.ip = Some("10.0.0.0".into())), (10, vec![50, 45, 40]));
        assert_eq!(q(&|q| q.device = Some("mobile".into())).0, 16);
        assert_eq!(q(&|q| q.device = Some("fridge".into())).0, 0);
        assert_eq!(q(&|q| q.country = Some("DE".into())).0, 50);
        assert_eq!(q(&|q| q.country = Some("fr".into())).0, 0);
        assert_eq!(
            q(&|q| {
                q.since = Some(100);
                q.until = Some(200)
            }),
            (10, vec![19, 18, 17])
        );
        assert_eq!(q(&|q| q.min_threat = Some(45)).0, 6);
        assert_eq!(
            q(&|q| {
                q.sort = SortKey::Id;
                q.desc = false
            }),
            (50, vec![1, 2, 3])
        );
        assert_eq!(
            q(&|q| {
                q.sort = SortKey::UserId;
                q.desc = false
            })
            .1,
            vec![2, 4, 6],
            "even < odd, then id"
        );
        let o = idx.overview(500, 1_000);
        assert_eq!((o.total, o.active), (50, 40));
        assert_eq!(o.by_device.get("mobile"), Some(&13));
        assert_eq!(o.threat, [19, 20, 1, 0, 0]);
    }
}
