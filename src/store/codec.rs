//! How sessions and token entries are written to disk: one version byte, then postcard (the only
//! module that calls postcard). Version 1 was JSON, as written by releases before the compact
//! encoding (a record then starts with `{`); it still decodes, and `SledStore::open` rewrites a
//! directory of it once (see `sled::upgrade`). A version this build does not know is refused,
//! never guessed at.

use super::{SessionHot, SessionRecord, StoreError, TokenEntry};

/// The current encoding.
pub const VERSION: u8 = 2;
/// What a JSON (version 1) value starts with.
const JSON: u8 = b'{';

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Codec(e.to_string())
}

fn unknown(v: Option<&u8>) -> StoreError {
    StoreError::Codec(format!(
        "stored value of unknown encoding version {:?}: written by a newer sessiongate? (this build reads 1 and {VERSION})",
        v.copied()
    ))
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![VERSION];
    out.extend(postcard::to_allocvec(v).map_err(err)?);
    Ok(out)
}

pub fn encode_session(r: &SessionRecord) -> Result<Vec<u8>, StoreError> {
    encode(r)
}

pub fn encode_token(e: &TokenEntry) -> Result<Vec<u8>, StoreError> {
    encode(e)
}

pub fn decode_session(b: &[u8]) -> Result<SessionRecord, StoreError> {
    match b.split_first() {
        Some((&VERSION, rest)) => postcard::from_bytes(rest).map_err(err),
        Some((&JSON, _)) => serde_json::from_slice(b).map_err(err),
        other => Err(unknown(other.map(|(v, _)| v))),
    }
}

pub fn decode_token(b: &[u8]) -> Result<TokenEntry, StoreError> {
    match b.split_first() {
        Some((&VERSION, rest)) => postcard::from_bytes(rest).map_err(err),
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
