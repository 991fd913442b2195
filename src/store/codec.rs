//! How sessions and token entries are written to disk: one version byte, then postcard (the only
//! module that calls postcard). Version 1 was JSON, as written by releases before the compact
//! encoding (a record then starts with `{`); it still decodes, and `SledStore::open` rewrites a
//! directory of it once (see `sled::upgrade`). Version 2 is the session layout before `role`
//! and `seen` joined the leading fields; it decodes too, and a record is written as version 3
//! at its next write. A version this build does not know is refused, never guessed at.

use super::{EndReason, Sealed, Seen, SessionHot, SessionOrigin, SessionRecord, StoreError, TokenEntry};
use serde::Deserialize;

/// The current encoding of sessions.
pub const VERSION: u8 = 3;
/// The encoding of sessions before version 3, and of token entries (unchanged since).
const V2: u8 = 2;
/// What a JSON (version 1) value starts with.
const JSON: u8 = b'{';

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Codec(e.to_string())
}

fn unknown(v: Option<&u8>) -> StoreError {
    StoreError::Codec(format!(
        "stored value of unknown encoding version {:?}: written by a newer sessiongate? (this build reads 1 to {VERSION})",
        v.copied()
    ))
}

fn encode<T: serde::Serialize>(version: u8, v: &T) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![version];
    out.extend(postcard::to_allocvec(v).map_err(err)?);
    Ok(out)
}

pub fn encode_session(r: &SessionRecord) -> Result<Vec<u8>, StoreError> {
    encode(VERSION, r)
}

pub fn encode_token(e: &TokenEntry) -> Result<Vec<u8>, StoreError> {
    encode(V2, e)
}

pub fn decode_session(b: &[u8]) -> Result<SessionRecord, StoreError> {
    match b.split_first() {
        Some((&VERSION, rest)) => postcard::from_bytes(rest).map_err(err),
        Some((&V2, rest)) => postcard::from_bytes::<RecordV2>(rest).map(SessionRecord::from).map_err(err),
        Some((&JSON, _)) => serde_json::from_slice(b).map_err(err),
        other => Err(unknown(other.map(|(v, _)| v))),
    }
}

pub fn decode_token(b: &[u8]) -> Result<TokenEntry, StoreError> {
    match b.split_first() {
        Some((&V2, rest)) => postcard::from_bytes(rest).map_err(err),
        Some((&JSON, _)) => serde_json::from_slice(b).map_err(err),
        other => Err(unknown(other.map(|(v, _)| v))),
    }
}

/// Calls `f` with the leading fields of a stored session, decoding only those (a JSON record
/// is decoded whole).
pub fn with_hot<R>(b: &[u8], f: impl FnOnce(&SessionHot<'_>) -> R) -> Result<R, StoreError> {
    match b.split_first() {
        Some((&VERSION, rest)) => {
            let (hot, _rest) = postcard::take_from_bytes::<SessionHot<'_>>(rest).map_err(err)?;
            Ok(f(&hot))
        }
        Some((&V2, rest)) => {
            // Version 2's leading fields lack `role` and `seen`; its role is in the tail.
            let rec: SessionRecord = postcard::from_bytes::<RecordV2>(rest).map(SessionRecord::from).map_err(err)?;
            Ok(f(&rec.hot()))
        }
        Some((&JSON, _)) => {
            let rec: SessionRecord = serde_json::from_slice(b).map_err(err)?;
            Ok(f(&rec.hot()))
        }
        other => Err(unknown(other.map(|(v, _)| v))),
    }
}

/// Whether a stored value is in the old (JSON) encoding.
pub fn is_legacy(b: &[u8]) -> bool {
    b.first() == Some(&JSON)
}

/// A session as version 2 laid it out (`role` last, no `seen`).
#[derive(Deserialize)]
struct RecordV2 {
    v: u8,
    id: u64,
    sid: String,
    document_id: String,
    user_id: String,
    username: Option<String>,
    email: Option<String>,
    ip: String,
    device_type: String,
    browser_name: String,
    os_name: String,
    login_time: i64,
    last_active: i64,
    logout_time: Option<i64>,
    threat_score: Option<u32>,
    geo: Option<crate::geo::GeoInfo>,
    aliases: Vec<String>,
    tenant_id: Option<String>,
    device_id: Option<String>,
    user_agent: String,
    end_reason: Option<EndReason>,
    origin: SessionOrigin,
    access: Option<Sealed>,
    refresh: Option<Sealed>,
    access_exp: Option<i64>,
    refresh_exp: Option<i64>,
    rotation_count: u32,
    rotations: Vec<i64>,
    risk_signals: Vec<crate::risk::Signal>,
    tags: Vec<String>,
    role: Option<String>,
}

impl From<RecordV2> for SessionRecord {
    fn from(r: RecordV2) -> SessionRecord {
        SessionRecord {
            v: r.v,
            id: r.id,
            sid: r.sid,
            document_id: r.document_id,
            user_id: r.user_id,
            username: r.username,
            email: r.email,
            ip: r.ip,
            device_type: r.device_type,
            browser_name: r.browser_name,
            os_name: r.os_name,
            login_time: r.login_time,
            last_active: r.last_active,
            logout_time: r.logout_time,
            threat_score: r.threat_score,
            geo: r.geo,
            aliases: r.aliases,
            role: r.role,
            seen: None::<Seen>,
            tenant_id: r.tenant_id,
            device_id: r.device_id,
            user_agent: r.user_agent,
            end_reason: r.end_reason,
            origin: r.origin,
            access: r.access,
            refresh: r.refresh,
            access_exp: r.access_exp,
            refresh_exp: r.refresh_exp,
            rotation_count: r.rotation_count,
            rotations: r.rotations,
            risk_signals: r.risk_signals,
            tags: r.tags,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{contract::record, Sealed, TokenKind};

    #[test]
    fn a_record_round_trips_and_its_prefix_is_the_hot_part() {
        let mut r = record(42, "alice");
        r.email = Some("a@example.com".into());
        r.logout_time = Some(9);
        r.end_reason = Some(crate::store::EndReason::Logout);
        r.aliases = vec!["bs-1".into()];
        r.access = Some(Sealed { kid: "k1".into(), nonce: "n".into(), ct: "c".into() });
        r.geo = Some(crate::geo::GeoInfo { country_code: Some("DE".into()), lat: Some(1.5), ..Default::default() });
        r.threat_score = Some(30);
        let bytes = encode_session(&r).expect("encode");
        assert_eq!(bytes[0], VERSION);
        assert_eq!(decode_session(&bytes).expect("decode"), r);
        with_hot(&bytes, |h| assert_eq!(*h, r.hot())).expect("hot");
        let json = serde_json::to_vec(&r).expect("json");
        assert!(is_legacy(&json));
        assert_eq!(decode_session(&json).expect("legacy decode"), r);
        with_hot(&json, |h| assert_eq!(*h, r.hot())).expect("legacy hot");
        assert!(bytes.len() * 2 < json.len(), "{} bytes vs {} as JSON", bytes.len(), json.len());
        assert!(
            matches!(decode_session(&[9, 1, 2]), Err(StoreError::Codec(e)) if e.contains("unknown encoding version"))
        );
    }

    /// Version 2 bytes (the old field order, `role` last) still decode, hot part included.
    #[test]
    fn a_version_2_record_still_reads() {
        let mut r = record(7, "bob");
        r.role = Some("editor".into());
        r.geo = Some(crate::geo::GeoInfo { country_code: Some("FR".into()), ..Default::default() });
        // The v2 layout: the v3 hot fields minus role and seen, then the tail with role last.
        let h = r.hot();
        let mut bytes = vec![2u8];
        let head = (
            h.v,
            h.id,
            h.sid,
            h.document_id,
            h.user_id,
            h.username,
            h.email,
            h.ip,
            h.device_type,
            h.browser_name,
            h.os_name,
            h.login_time,
            h.last_active,
        );
        bytes.extend(postcard::to_allocvec(&head).expect("head"));
        let mid = (h.logout_time, h.threat_score, &h.geo, &h.aliases);
        bytes.extend(postcard::to_allocvec(&mid).expect("mid"));
        let tail = (
            &r.tenant_id,
            &r.device_id,
            &r.user_agent,
            r.end_reason,
            r.origin,
            &r.access,
            &r.refresh,
            r.access_exp,
            r.refresh_exp,
            r.rotation_count,
            &r.rotations,
            &r.risk_signals,
            &r.tags,
            &r.role,
        );
        bytes.extend(postcard::to_allocvec(&tail).expect("tail"));
        assert_eq!(decode_session(&bytes).expect("v2 decodes"), r);
        with_hot(&bytes, |got| {
            assert_eq!(got.role, Some("editor"));
            assert_eq!(*got, r.hot());
        })
        .expect("v2 hot");
        assert_eq!(encode_session(&r).expect("encode")[0], 3, "written back as version 3");
    }

    #[test]
    fn a_token_entry_round_trips_in_a_few_bytes() {
        let e =
            TokenEntry { session: 1 << 40, kind: TokenKind::Refresh, exp: Some(1_900_000_000), rotated_at: Some(1) };
        let bytes = encode_token(&e).expect("encode");
        assert!(bytes.len() <= 16, "{} bytes", bytes.len());
        assert_eq!(decode_token(&bytes).expect("decode"), e);
        assert_eq!(decode_token(&serde_json::to_vec(&e).expect("json")).expect("legacy"), e);
    }
}
