//! Replication events: what one instance tells the others through the Redis stream.
//!
//! Events carry *state*, not operations: a session event holds the whole record and every token
//! entry of the session as the sender now has them. Applying one is a merge
//! ([`super::merge`]) that is idempotent, commutative and monotonic — an ended
//! session stays ended whatever arrives later — so duplicates (at-least-once publishing),
//! reordering between instances and replays after a snapshot are all harmless.

use crate::store::{BlockRecord, SessionRecord, TokenEntry, TokenHash};
use serde::{Deserialize, Serialize};

/// Version of the event encoding. A receiver skips (and counts) events of a newer version, so a
/// rolling upgrade never applies what it does not understand.
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Event {
    /// Created, rotated or ended sessions (one item for a live change; many for a republish).
    Sessions {
        items: Vec<Item>,
    },
    /// Last-active times, aggregated per publish interval.
    Touches {
        touches: Vec<(u64, i64)>,
    },
    Block {
        rec: BlockRecord,
    },
    /// `at`: when the unblock happened (a block newer than that survives it).
    Unblock {
        user_id: String,
        at: i64,
    },
}

/// One session's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub rec: SessionRecord,
    pub tokens: Vec<WireToken>,
}

/// A token entry with its hash in hex (tokens themselves never leave the instance unencrypted;
/// the record carries them sealed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireToken {
    #[serde(with = "hex32")]
    pub h: TokenHash,
    #[serde(flatten)]
    pub entry: TokenEntry,
}

impl Event {
    pub fn session(rec: SessionRecord, tokens: Vec<(TokenHash, TokenEntry)>) -> Event {
        Event::Sessions { items: vec![Item::new(rec, tokens)] }
    }

    pub fn encode(&self) -> Vec<u8> {
        // Serialising these plain structs cannot fail; an empty payload would be skipped as
        // undecodable by receivers rather than crash this one.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Event, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Bounded label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Sessions { items } if items.len() == 1 => {
                let r = &items[0].rec;
                if !r.is_active() {
                    "ended"
                } else if r.rotation_count > 0 {
                    "rotated"
                } else {
                    "created"
                }
            }
            Event::Sessions { .. } => "state",
            Event::Touches { .. } => "touches",
            Event::Block { .. } => "blocked",
            Event::Unblock { .. } => "unblocked",
        }
    }
}

impl Item {
    pub fn new(rec: SessionRecord, tokens: Vec<(TokenHash, TokenEntry)>) -> Item {
        Item { rec, tokens: tokens.into_iter().map(|(h, entry)| WireToken { h, entry }).collect() }
    }
}

mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::fmt::Write;

    pub fn serialize<S: Serializer>(h: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        let mut out = String::with_capacity(64);
        for b in h {
            let _ = write!(out, "{b:02x}");
        }
        s.serialize_str(&out)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let bytes = text.as_bytes();
        if bytes.len() != 64 {
            return Err(serde::de::Error::custom("token hash must be 64 hex digits"));
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks(2).enumerate() {
            let hex = std::str::from_utf8(pair).map_err(serde::de::Error::custom)?;
            out[i] = u8::from_str_radix(hex, 16).map_err(serde::de::Error::custom)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TokenKind;

    #[test]
    fn events_round_trip_and_name_their_kind() {
        let mut rec = crate::store::contract::record(5, "u");
        let entry = TokenEntry { session: 5, kind: TokenKind::Refresh, exp: Some(9), rotated_at: Some(3) };
        let ev = Event::session(rec.clone(), vec![([0xab; 32], entry)]);
        let text = String::from_utf8(ev.encode()).expect("utf8");
        assert!(text.contains(&"ab".repeat(32)), "hashes travel as hex: {text}");
        assert_eq!(Event::decode(text.as_bytes()).expect("decode"), ev);
        assert_eq!(ev.kind(), "created");
        rec.logout_time = Some(1);
        assert_eq!(Event::session(rec, vec![]).kind(), "ended");
        assert!(Event::decode(br#"{"t":"sessions","items":[{"rec":{},"tokens":[]}]}"#).is_err());
        assert!(Event::decode(br#"{"t":"touches","touches":[[1,2]]}"#).is_ok());
    }
}
