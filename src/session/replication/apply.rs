//! Applying other instances' session state.
//!
//! Remote state is merged, never copied over: [`merge`] keeps the earliest ending, the latest
//! activity and the most advanced rotation, so applying the same event twice, or two events in
//! either order, gives the same record — and no late event (a touch, a replayed creation) can
//! bring an ended session back.

use super::event::{Event, Item};
use crate::session::Sessions;
use crate::store::{BlockRecord, Changes, EndReason, SessionRecord, StoreError, TokenEntry, TokenHash};
use std::collections::HashMap;
use std::sync::atomic::Ordering;

/// Merges two versions of the same session.
pub fn merge(local: &SessionRecord, remote: &SessionRecord) -> SessionRecord {
    // Token state follows the most advanced rotation; ties break on deterministic fields so
    // every instance picks the same side.
    let rank =
        |r: &SessionRecord| (r.rotation_count, r.rotations.last().copied(), r.access.as_ref().map(|s| s.ct.clone()));
    let mut out = if rank(remote) > rank(local) { remote.clone() } else { local.clone() };
    let (other_aliases, other) =
        if rank(remote) > rank(local) { (&local.aliases, local) } else { (&remote.aliases, remote) };
    for a in other_aliases {
        if !out.aliases.contains(a) {
            out.aliases.push(a.clone());
        }
    }

    out.last_active = local.last_active.max(remote.last_active);
    out.login_time = local.login_time.min(remote.login_time);
    // The earliest ending wins, with its reason.
    let ended = [local, remote]
        .into_iter()
        .filter_map(|r| r.logout_time.map(|t| (t, r.end_reason)))
        // Ties break on the reason's name, as every instance (and every version) orders it.
        .min_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.map(EndReason::as_str).cmp(&b.1.map(EndReason::as_str))));
    if let Some((t, reason)) = ended {
        out.logout_time = Some(t);
        out.end_reason = reason;
    }
    // Enrichment a side may lack (e.g. filled in later on the creating instance).
    if out.geo.is_none() {
        out.geo = other.geo.clone();
    }
    if out.threat_score.is_none() {
        out.threat_score = other.threat_score;
    }
    // Where it was last used from: the latest sighting, with the score it was given.
    let at = |r: &SessionRecord| r.seen.as_ref().map(|s| (s.at, s.changes));
    if at(other) > at(&out) {
        out.seen = other.seen.clone();
        if other.seen.as_ref().is_some_and(|s| s.changes > 0) {
            out.threat_score = other.threat_score.or(out.threat_score);
        }
    }
    out
}

/// Merges two versions of a token entry: a rotation, once seen, is kept (earliest time).
pub fn merge_token(local: &TokenEntry, remote: &TokenEntry) -> TokenEntry {
    let rotated_at = match (local.rotated_at, remote.rotated_at) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    TokenEntry { rotated_at, exp: local.exp.max(remote.exp), ..*local }
}

/// What applying a batch changed, for the caller's bookkeeping.
#[derive(Debug, Default)]
pub struct Applied {
    /// Sessions this instance did not know before (the caller seeds risk history with them).
    pub new_sessions: Vec<SessionRecord>,
    /// Sessions that were live here and are ended now.
    pub ended: usize,
    pub events: usize,
}

impl Sessions {
    /// Applies remote events and, in the same transaction, `meta` (the replication cursor).
    /// Not flushed: if this instance crashes first, it reads the events again from the cursor.
    pub async fn apply_remote(
        &self,
        events: Vec<Event>,
        meta: Vec<(&'static str, Vec<u8>)>,
    ) -> Result<Applied, StoreError> {
        let mut applied = Applied { events: events.len(), ..Default::default() };
        let mut incoming: HashMap<u64, Item> = HashMap::new();
        let mut touches: HashMap<u64, i64> = HashMap::new();
        for ev in events {
            match ev {
                Event::Sessions { items } => {
                    for item in items {
                        match incoming.get_mut(&item.rec.id) {
                            Some(prev) => {
                                prev.rec = merge(&prev.rec, &item.rec);
                                prev.tokens.extend(item.tokens);
                            }
                            None => {
                                incoming.insert(item.rec.id, item);
                            }
                        }
                    }
                }
                Event::Touches { touches: t } => {
                    for (id, ms) in t {
                        let e = touches.entry(id).or_insert(ms);
                        *e = (*e).max(ms);
                    }
                }
                Event::Block { rec } => {
                    if self.apply_block(rec.clone()).await? {
                        // The blocking instance may not have known every session of the user;
                        // ending them here also queues their backend revocation.
                        let ids = self.user_session_ids(&rec.user_id);
                        self.end_inner(&ids, EndReason::UserBlocked, None).await?;
                    }
                }
                Event::Unblock { user_id, at } => self.apply_unblock(&user_id, at).await?,
            }
        }

        let ids: Vec<u64> = incoming.keys().copied().collect();
        let _g = self.lock_many(&ids).await;
        let locals: HashMap<u64, SessionRecord> =
            self.timed("read", self.store.get_many(ids)).await?.into_iter().map(|r| (r.id, r)).collect();
        let mut changes = Changes { meta, ..Default::default() };
        let mut index_updates = Vec::new();
        for (id, item) in incoming {
            let merged = match locals.get(&id) {
                Some(local) => merge(local, &item.rec),
                None => item.rec,
            };
            let known: HashMap<TokenHash, TokenEntry> =
                item.tokens.iter().filter_map(|t| self.index.token(&t.h).map(|e| (t.h, e))).collect();
            let mut tokens = Vec::new();
            for t in item.tokens {
                if t.entry.session != id {
                    continue;
                }
                let e = match known.get(&t.h) {
                    Some(k) => merge_token(k, &t.entry),
                    None => t.entry,
                };
                if known.get(&t.h) != Some(&e) {
                    tokens.push((t.h, e));
                }
            }
            if locals.get(&id) == Some(&merged) && tokens.is_empty() {
                continue;
            }
            let foreign = merged.access.as_ref().filter(|s| !self.keyring.knows(&s.kid));
            if let Some(sealed) = foreign.filter(|_| !self.foreign_key_reported.swap(true, Ordering::Relaxed)) {
                tracing::error!(
                    session = id,
                    kid = %sealed.kid,
                    "replicated session is sealed with a key this instance does not have: \
                     every instance must share sessions.encryption_key"
                );
            }
            changes.put_tokens.extend(tokens.iter().copied());
            index_updates.push((merged.clone(), tokens, !locals.contains_key(&id)));
            changes.put_sessions.push(merged);
        }
        let touch_list: Vec<(u64, i64)> = touches.into_iter().collect();
        self.timed("replicate", self.store.apply(changes, false)).await?;
        if !touch_list.is_empty() {
            self.store.touch(touch_list.clone()).await?;
        }

        for (rec, tokens, is_new) in index_updates {
            match self.index.get(rec.id) {
                Some(live) => {
                    if !rec.is_active() && self.index.mark_ended(&live, crate::clock::now_ms()) {
                        applied.ended += 1;
                        self.notify_session("ended", rec.id, &rec.sid, &rec.user_id);
                    }
                    self.index.seen(&live, rec.last_active, true);
                    for a in &rec.aliases {
                        self.index.add_alias(&live, a);
                    }
                    self.index.put_tokens(&live, &tokens);
                }
                None => {
                    // This instance learns of an ending now, not at the remote ending time.
                    self.index.insert(&rec.hot(), rec.last_active, crate::clock::now_ms(), &tokens);
                    self.notify_session(
                        if rec.is_active() { "created" } else { "ended" },
                        rec.id,
                        &rec.sid,
                        &rec.user_id,
                    );
                }
            }
            if is_new {
                applied.new_sessions.push(rec);
            }
        }
        for (id, ms) in touch_list {
            if let Some(live) = self.index.get(id) {
                self.index.seen(&live, ms, true);
            }
        }
        Ok(applied)
    }

    /// Returns whether the user is newly blocked here.
    async fn apply_block(&self, rec: BlockRecord) -> Result<bool, StoreError> {
        let known = crate::sync::read(&self.blocked).get(&rec.user_id).map(|cur| cur.blocked_at);
        if known.is_some_and(|at| at >= rec.blocked_at) {
            return Ok(false);
        }
        self.store.set_block(&rec.user_id, Some(rec.clone()), None).await?;
        self.notify_user("blocked", &rec.user_id);
        crate::sync::write(&self.blocked).insert(rec.user_id.clone(), rec);
        Ok(known.is_none())
    }

    /// An unblock removes a block made before it; a block made after it (elsewhere, while the
    /// two instances could not see each other) stands.
    async fn apply_unblock(&self, user_id: &str, at: i64) -> Result<(), StoreError> {
        let older = crate::sync::read(&self.blocked).get(user_id).is_some_and(|cur| cur.blocked_at <= at);
        if older {
            self.store.set_block(user_id, None, None).await?;
            crate::sync::write(&self.blocked).remove(user_id);
            self.notify_user("unblocked", user_id);
        }
        Ok(())
    }

    /// This instance's whole state in chunks of `chunk` sessions (for snapshots and republishing).
    /// Each chunk is read when asked for, so memory stays bounded.
    pub fn state_ids(&self) -> Vec<u64> {
        self.ids()
    }

    /// Full state items of `ids` (records from the store, tokens from the index).
    pub async fn state_items(&self, ids: Vec<u64>) -> Result<Vec<Item>, StoreError> {
        let recs = self.records(ids.clone()).await?;
        let mut tokens = self.token_entries(ids).await?;
        Ok(recs
            .into_iter()
            .map(|rec| {
                let id = rec.id;
                Item::new(rec, tokens.remove(&id).unwrap_or_default())
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::contract::record;
    use crate::store::TokenKind;

    #[test]
    fn the_latest_sighting_wins_with_its_score() {
        let base = record(1, "u");
        let mut moved = base.clone();
        moved.seen = Some(crate::store::Seen { ip: "1.2.3.4".into(), at: 70, changes: 1, ..Default::default() });
        moved.threat_score = Some(40);
        let mut rotated = base.clone();
        rotated.rotation_count = 1;
        rotated.threat_score = Some(0);
        for (l, r) in [(&moved, &rotated), (&rotated, &moved)] {
            let m = merge(l, r);
            assert_eq!(m.seen.as_ref().map(|s| s.ip.as_str()), Some("1.2.3.4"));
            assert_eq!((m.rotation_count, m.threat_score), (1, Some(40)), "the re-score travels with it");
        }
    }

    #[test]
    fn merge_is_idempotent_commutative_and_ending_wins() {
        let base = record(1, "u");
        let mut rotated = base.clone();
        rotated.rotation_count = 1;
        rotated.rotations = vec![50];
        rotated.aliases = vec!["b".into()];
        let mut touched = base.clone();
        touched.last_active = 90;
        let mut ended = base.clone();
        ended.logout_time = Some(60);
        ended.end_reason = Some(EndReason::AdminTerminated);
        let mut ended_later = base.clone();
        ended_later.logout_time = Some(70);
        ended_later.end_reason = Some(EndReason::Logout);

        let all = [&base, &rotated, &touched, &ended, &ended_later];
        for a in all {
            assert_eq!(merge(a, a), *a, "idempotent");
            for b in all {
                assert_eq!(merge(a, b), merge(b, a), "commutative");
            }
        }
        let m = merge(&merge(&ended, &touched), &rotated);
        assert_eq!(m.logout_time, Some(60), "a late touch or rotation never revives an ended session");
        assert_eq!(m.end_reason, Some(EndReason::AdminTerminated), "the earliest ending keeps its reason");
        assert_eq!((m.last_active, m.rotation_count), (90, 1));
        assert_eq!(m.aliases, vec!["b".to_string()]);
        assert_eq!(merge(&ended_later, &ended).logout_time, Some(60));
    }

    #[test]
    fn token_rotation_is_kept() {
        let a = TokenEntry { session: 1, kind: TokenKind::Refresh, exp: Some(5), rotated_at: None };
        let b = TokenEntry { rotated_at: Some(7), ..a };
        let c = TokenEntry { rotated_at: Some(6), ..a };
        assert_eq!(merge_token(&a, &b).rotated_at, Some(7));
        assert_eq!(merge_token(&b, &a).rotated_at, Some(7));
        assert_eq!(merge_token(&b, &c).rotated_at, Some(6));
    }
}
