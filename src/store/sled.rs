//! The only module that calls sled.
//!
//! Every call runs in `spawn_blocking` or on the store's writer thread (transactions, see
//! [`run_writer`]): sled's reads may touch the disk and its writes may block on its log. Durability comes from [`SledStore::flush`], which callers request for every
//! change they acknowledge (a session ending must survive a crash). Concurrent flush requests
//! share one fsync (group commit). sled's own `flush_async` is not used: it parks a thread of
//! sled's small I/O pool per call, and enough concurrent calls starve the pool of the very
//! threads that write the log — a deadlock seen under replication load. The per-request token check
//! never comes here; it reads the in-memory index in `session/`.
//!
//! Trees: `sessions` (id, big-endian u64 → record), `tokens` (session id ++ SHA-256 → entry:
//! a session's tokens sit together, so a purge or a replication event reads them with one range
//! scan), both in the compact versioned encoding of `codec`; `keys` (`sid` and `documentId` → id, written when a
//! record is first stored and removed with it: the user API and the admin look sessions up by
//! these, and the in-memory index does not keep them);
//! `touches` (id → last-active ms; kept apart so last-seen updates do not rewrite records),
//! `meta` (`max_id`), `blocks` (user id → JSON block record), `audit` (time ms ++ sequence, both
//! big-endian → JSON event; append-only, ordered by time), `alerts` (id → JSON alert record: the
//! durable delivery queue), `outbox` (sled-generated id → replication event not yet published
//! to Redis; FIFO), `revocations` (session id → JSON revocation record: the durable queue of
//! backend sessions still to be revoked, written in the same transaction as the ending).

use super::codec;
use super::{
    AlertRecord, AuditRecord, BlockRecord, Changes, Loaded, RevocationRecord, SessionHot, SessionRecord, StoreError,
    TokenEntry, TokenHash,
};
use sled::Transactional;
use std::path::Path;

#[derive(Clone)]
pub struct SledStore {
    db: sled::Db,
    sessions: sled::Tree,
    tokens: sled::Tree,
    keys: sled::Tree,
    touches: sled::Tree,
    meta: sled::Tree,
    blocks: sled::Tree,
    audit: sled::Tree,
    alerts: sled::Tree,
    outbox: sled::Tree,
    revocations: sled::Tree,
    sync: std::sync::Arc<FlushSync>,
    /// The transaction writer (see [`run_writer`]) and the trees its transactions touch.
    writer: std::sync::mpsc::Sender<Write>,
    tx_trees: std::sync::Arc<TxTrees>,
}

/// Changes encoded for the transaction writer.
struct Encoded {
    /// (id, encoded record, its `sid` and `documentId` where they do not carry the id).
    sessions: Vec<(u64, Vec<u8>, Vec<String>)>,
    /// (token key, encoded entry).
    tokens: Vec<([u8; 40], Vec<u8>)>,
    delete_tokens: Vec<(u64, TokenHash)>,
    delete_sessions: Vec<u64>,
    max_id: Option<u64>,
    meta: Vec<(&'static str, Vec<u8>)>,
    outbox: Vec<Vec<u8>>,
    revocations: Vec<(u64, Vec<u8>)>,
    delete_revocations: Vec<u64>,
}

struct Write {
    changes: Encoded,
    /// Carried by each write rather than held by the writer thread, so dropping the last store
    /// handle closes the database at once (a restart can reopen the directory immediately).
    trees: std::sync::Arc<TxTrees>,
    done: tokio::sync::oneshot::Sender<Result<(), StoreError>>,
}

/// The trees a transaction touches.
struct TxTrees {
    db: sled::Db,
    sessions: sled::Tree,
    tokens: sled::Tree,
    keys: sled::Tree,
    touches: sled::Tree,
    meta: sled::Tree,
    outbox: sled::Tree,
    revocations: sled::Tree,
}

/// Most change sets merged into one transaction.
const MAX_BATCH: usize = 256;

/// One thread applies every change set. What queued up while a transaction ran is merged into
/// the next one — in arrival order, with the same effect as one transaction each — so a burst
/// of logins costs a few transactions instead of one each (sled transactions over five trees
/// were the bulk of a login's cost). Ends when the last store handle is dropped.
fn run_writer(rx: std::sync::mpsc::Receiver<Write>) {
    while let Ok(first) = rx.recv() {
        let trees = first.trees.clone();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let result = write_batch(&trees, &batch);
        drop(trees);
        for w in batch {
            let _ = w.done.send(result.as_ref().map(|_| ()).map_err(|e| StoreError::Sled(e.clone())));
        }
    }
}

fn write_batch(t: &TxTrees, batch: &[Write]) -> Result<(), String> {
    // A session's tokens, read here because a transaction cannot scan a range: this thread is
    // the only writer, so none can be added between the scan and the transaction.
    let mut session_tokens = Vec::new();
    for id in batch.iter().flat_map(|w| &w.changes.delete_sessions) {
        for kv in t.tokens.scan_prefix(id.to_be_bytes()) {
            session_tokens.push((*id, kv.map_err(|e| e.to_string())?.0));
        }
    }
    let mut outbox_ids = Vec::new();
    for w in batch {
        for _ in &w.changes.outbox {
            outbox_ids.push(t.db.generate_id().map_err(|e| e.to_string())?);
        }
    }
    (&t.sessions, &t.tokens, &t.touches, &t.meta, &t.outbox, &t.revocations, &t.keys)
        .transaction(|(sessions, tok, touches, meta, out, revocations, keys)| {
            let mut ids = outbox_ids.iter();
            for c in batch.iter().map(|w| &w.changes) {
                for (id, v, names) in &c.sessions {
                    if sessions.insert(&id.to_be_bytes(), v.as_slice())?.is_none() {
                        for k in names {
                            keys.insert(k.as_bytes(), &id.to_be_bytes())?;
                        }
                    }
                }
                for (k, v) in &c.tokens {
                    tok.insert(k.as_slice(), v.as_slice())?;
                }
                for (id, h) in &c.delete_tokens {
                    tok.remove(token_key(*id, h).as_slice())?;
                }
                for id in &c.delete_sessions {
                    for (_, k) in session_tokens.iter().filter(|(s, _)| s == id) {
                        tok.remove(k)?;
                    }
                    // Tokens put earlier in this batch (not there when the scan ran).
                    for (k, _) in batch.iter().flat_map(|w| &w.changes.tokens) {
                        if k.starts_with(&id.to_be_bytes()) {
                            tok.remove(k.as_slice())?;
                        }
                    }
                    if let Some(old) = sessions.remove(&id.to_be_bytes())? {
                        // Unreadable, its keys stay behind: harmless, they name no record.
                        let names = codec::with_hot(&old, |h| unminted_keys(h.id, h.sid, h.document_id));
                        for k in names.iter().flatten() {
                            keys.remove(k.as_bytes())?;
                        }
                    }
                    touches.remove(&id.to_be_bytes())?;
                }
                if let Some(max) = c.max_id {
                    let cur = meta.get(MAX_ID)?.map(|v| decode_i64(&v) as u64).unwrap_or(0);
                    if max > cur {
                        meta.insert(MAX_ID, &(max as i64).to_be_bytes())?;
                    }
                }
                for (k, v) in &c.meta {
                    meta.insert(k.as_bytes(), v.as_slice())?;
                }
                for e in &c.outbox {
                    let id = ids.next().copied().unwrap_or_default();
                    out.insert(&id.to_be_bytes(), e.as_slice())?;
                }
                for (id, v) in &c.revocations {
                    revocations.insert(&id.to_be_bytes(), v.as_slice())?;
                }

                for id in &c.delete_revocations {
                    revocations.remove(&id.to_be_bytes())?;
                }
            }
            Ok(())
        })
        .map_err(|e: sled::transaction::TransactionError<()>| format!("{e:?}"))
}

/// Group commit: each flush request takes a ticket; one fsync covers every ticket taken before
/// it started.
#[derive(Default)]
struct FlushSync {
    requested: std::sync::atomic::AtomicU64,
    done: std::sync::atomic::AtomicU64,
    lock: tokio::sync::Mutex<()>,
}

fn sled_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Sled(e.to_string())
}

fn codec_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Codec(e.to_string())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| StoreError::Join(e.to_string()))?
}

const MAX_ID: &[u8] = b"max_id";

/// How long [`SledStore::open`] waits for a held directory lock.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Waits (at most [`LOCK_WAIT`]) while the lock sled takes on `db` is held. After an in-process
/// shutdown (a restart in the tests) sled's own background threads can keep that lock for a
/// moment after the last handle is dropped; a process exit would release it at once. If it is
/// still held afterwards (another live instance), sled's own open fails with its lock error.
async fn wait_for_lock(db: std::path::PathBuf) -> Result<(), StoreError> {
    use fs2::FileExt;
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        let path = db.clone();
        let held = blocking(move || {
            // A new directory, or a file sled will report on: nothing to wait for.
            let Ok(file) = std::fs::OpenOptions::new().read(true).write(true).open(&path) else { return Ok(false) };
            Ok(match file.try_lock_exclusive() {
                Err(e) => e.kind() == fs2::lock_contended_error().kind(),
                // Released with `file` at the end of this closure.
                Ok(()) => false,
            })
        })
        .await?;
        if !held || std::time::Instant::now() >= deadline {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

impl SledStore {
    /// Opens (or creates) the database in `dir`.
    pub async fn open(dir: &Path, cache_capacity_bytes: u64) -> Result<SledStore, StoreError> {
        wait_for_lock(dir.join("sled").join("db")).await?;
        let dir = dir.to_path_buf();
        blocking(move || {
            std::fs::create_dir_all(&dir).map_err(|e| StoreError::Sled(format!("create {}: {e}", dir.display())))?;
            let db = sled::Config::new()
                .path(dir.join("sled"))
                .cache_capacity(cache_capacity_bytes)
                .mode(sled::Mode::HighThroughput)
                .open()
                .map_err(sled_err)?;
            let tree = |name: &str| db.open_tree(name).map_err(sled_err);
            let (sessions, tokens, keys, touches, meta, outbox, revocations) = (
                tree("sessions")?,
                tree("tokens")?,
                tree("keys")?,
                tree("touches")?,
                tree("meta")?,
                tree("outbox")?,
                tree("revocations")?,
            );
            upgrade(&sessions, &tokens, &keys, &meta)?;
            let tx_trees = std::sync::Arc::new(TxTrees {
                db: db.clone(),
                sessions: sessions.clone(),
                tokens: tokens.clone(),
                keys: keys.clone(),
                touches: touches.clone(),
                meta: meta.clone(),
                outbox: outbox.clone(),
                revocations: revocations.clone(),
            });
            let (writer, rx) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name("sessiongate-store-writer".into())
                .spawn(move || run_writer(rx))
                .map_err(|e| StoreError::Sled(format!("cannot start the store writer: {e}")))?;
            Ok(SledStore {
                sessions,
                tokens,
                keys,
                touches,
                meta,
                blocks: tree("blocks")?,
                audit: tree("audit")?,
                alerts: tree("alerts")?,
                outbox,
                revocations,
                sync: Default::default(),
                writer,
                tx_trees,
                db,
            })
        })
        .await
    }

    /// Reads the sessions and tokens (startup only). Each session's leading fields go to
    /// `f` with its last-active time (the `touches` tree merged in), decoded in place: no record
    /// is materialised. The tokens are read by a second thread meanwhile.
    pub async fn load_with<St, F>(&self, state: St, mut f: F) -> Result<(Loaded, St), StoreError>
    where
        St: Send + 'static,
        F: FnMut(&mut St, &SessionHot<'_>, i64) + Send + 'static,
    {
        let me = self.clone();
        blocking(move || {
            let mut state = state;
            std::thread::scope(|scope| {
                let tokens = scope.spawn(|| -> Result<Vec<(TokenHash, TokenEntry)>, StoreError> {
                    let mut out = Vec::new();
                    for kv in me.tokens.iter() {
                        let (k, v) = kv.map_err(sled_err)?;
                        let Some((_, hash)) = split_token_key(&k) else { continue };
                        out.push((hash, codec::decode_token(&v)?));
                    }
                    Ok(out)
                });
                let mut sessions = 0;
                // Both trees are ordered by big-endian id: merge them in one pass.
                let mut touches = me.touches.iter().peekable();
                for kv in me.sessions.iter() {
                    let (k, v) = kv.map_err(sled_err)?;
                    let id = decode_i64(&k) as u64;
                    let mut touched = None;
                    loop {
                        match touches.peek() {
                            Some(Ok((tk, tv))) => {
                                let tid = decode_i64(tk) as u64;
                                if tid > id {
                                    break;
                                }
                                if tid == id {
                                    touched = Some(decode_i64(tv));
                                }
                                touches.next();
                            }
                            Some(Err(_)) => {
                                if let Some(Err(e)) = touches.next() {
                                    return Err(sled_err(e));
                                }
                            }
                            None => break,
                        }
                    }
                    codec::with_hot(&v, |h| f(&mut state, h, touched.map_or(h.last_active, |t| t.max(h.last_active))))?;
                    sessions += 1;
                }
                let tokens = tokens.join().map_err(|_| StoreError::Sled("the token reader panicked".into()))??;
                let max_id = me.meta.get(MAX_ID).map_err(sled_err)?.map(|v| decode_i64(&v) as u64).unwrap_or(0);
                Ok((Loaded { sessions, tokens, max_id }, state))
            })
        })
        .await
    }

    /// The tokens stored for each of `ids`.
    pub async fn tokens_of(&self, ids: Vec<u64>) -> Result<Vec<(TokenHash, TokenEntry)>, StoreError> {
        let tree = self.tokens.clone();
        blocking(move || {
            let mut out = Vec::new();
            for id in ids {
                for kv in tree.scan_prefix(id.to_be_bytes()) {
                    let (k, v) = kv.map_err(sled_err)?;
                    if let Some((_, hash)) = split_token_key(&k) {
                        out.push((hash, codec::decode_token(&v)?));
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    /// The session whose `sid` or `documentId` is `key`.
    pub async fn find_key(&self, key: String) -> Result<Option<u64>, StoreError> {
        let keys = self.keys.clone();
        blocking(move || Ok(keys.get(key.as_bytes()).map_err(sled_err)?.map(|v| decode_i64(&v) as u64))).await
    }

    /// Applies `changes` atomically; with `durable`, returns only after they reached the disk.
    pub async fn apply(&self, changes: Changes, durable: bool) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let sessions = changes
            .put_sessions
            .iter()
            .map(|r| Ok((r.id, codec::encode_session(r)?, unminted_keys(r.id, &r.sid, &r.document_id))))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let tokens = changes
            .put_tokens
            .iter()
            .map(|(h, e)| Ok((token_key(e.session, h), codec::encode_token(e)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let revocations = encode_keyed(&changes.put_revocations, |r| (r.session, r))?;
        let encoded = Encoded {
            revocations,
            delete_revocations: changes.delete_revocations,
            max_id: changes.put_sessions.iter().map(|r| r.id).max(),
            sessions,
            tokens,
            delete_tokens: changes.delete_tokens,
            delete_sessions: changes.delete_sessions,
            meta: changes.meta,
            outbox: changes.outbox,
        };
        let (done, wait) = tokio::sync::oneshot::channel();
        self.writer
            .send(Write { changes: encoded, trees: self.tx_trees.clone(), done })
            .map_err(|_| StoreError::Sled("the store writer has stopped".into()))?;
        wait.await.map_err(|_| StoreError::Sled("the store writer has stopped".into()))??;
        if durable {
            self.flush().await?;
        }
        Ok(())
    }

    /// Records last-active times. Not flushed: losing a few seconds of last-seen in a crash is
    /// acceptable, and these writes are the most frequent.
    pub async fn touch(&self, touches: Vec<(u64, i64)>) -> Result<(), StoreError> {
        let tree = self.touches.clone();
        blocking(move || {
            let mut batch = sled::Batch::default();
            for (id, ms) in touches {
                batch.insert(&id.to_be_bytes(), &ms.to_be_bytes());
            }
            tree.apply_batch(batch).map_err(sled_err)
        })
        .await
    }

    pub async fn get(&self, id: u64) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.get_many(vec![id]).await?.pop())
    }

    /// Reads the records of `ids` that exist, with their last-active times merged in.
    pub async fn get_many(&self, ids: Vec<u64>) -> Result<Vec<SessionRecord>, StoreError> {
        let me = self.clone();
        blocking(move || {
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(v) = me.sessions.get(id.to_be_bytes()).map_err(sled_err)? {
                    let mut rec = codec::decode_session(&v)?;
                    if let Some(t) = me.touches.get(id.to_be_bytes()).map_err(sled_err)? {
                        rec.last_active = rec.last_active.max(decode_i64(&t));
                    }
                    out.push(rec);
                }
            }
            Ok(out)
        })
        .await
    }

    /// Up to `limit` records with ids greater than `after`, in id order (for the sweeper).
    pub async fn scan(&self, after: u64, limit: usize) -> Result<Vec<SessionRecord>, StoreError> {
        let tree = self.sessions.clone();
        blocking(move || {
            let start = after.saturating_add(1).to_be_bytes();
            let mut out = Vec::new();
            if after == u64::MAX {
                return Ok(out);
            }
            for kv in tree.range(start..).take(limit) {
                let (_, v) = kv.map_err(sled_err)?;
                out.push(codec::decode_session(&v)?);
            }
            Ok(out)
        })
        .await
    }

    /// Bytes the database occupies on disk.
    pub async fn size_on_disk(&self) -> Result<u64, StoreError> {
        let db = self.db.clone();
        blocking(move || db.size_on_disk().map_err(sled_err)).await
    }

    /// Makes every write completed before this call durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering::SeqCst;
        let ticket = self.sync.requested.fetch_add(1, SeqCst) + 1;
        let _g = self.sync.lock.lock().await;
        if self.sync.done.load(SeqCst) >= ticket {
            return Ok(());
        }
        let upto = self.sync.requested.load(SeqCst);
        let db = self.db.clone();
        // The one place a blocking flush is allowed: off the async threads, in spawn_blocking.
        #[allow(clippy::disallowed_methods)]
        blocking(move || db.flush().map(drop).map_err(sled_err)).await?;
        self.sync.done.store(upto, SeqCst);
        Ok(())
    }
}

/// The names of a session that do not carry its id (see `id_in_sid`): the `keys` tree's entries.
fn unminted_keys(id: u64, sid: &str, document_id: &str) -> Vec<String> {
    let mut out = Vec::new();
    if super::id_in_sid(sid) != Some(id) {
        out.push(sid.to_string());
    }
    if super::id_in_document_id(document_id) != Some(id) {
        out.push(document_id.to_string());
    }
    out
}

/// A token's key: its session's id (big-endian), then its hash.
fn token_key(session: u64, h: &TokenHash) -> [u8; 40] {
    let mut k = [0; 40];
    for (d, s) in k.iter_mut().zip(session.to_be_bytes().iter().chain(h)) {
        *d = *s;
    }
    k
}

fn split_token_key(k: &[u8]) -> Option<(u64, TokenHash)> {
    let (id, hash) = (k.get(..8)?, k.get(8..)?);
    Some((decode_i64(id) as u64, <TokenHash>::try_from(hash).ok()?))
}

/// Which layout the session and token trees are in (`meta` key `format`): 3 is the compact
/// encoding with tokens keyed by session (1 was JSON keyed by hash).
const FORMAT: &[u8] = b"format";
const LAYOUT: u8 = 3;

/// Rewrites a data directory of the JSON layout (releases before the compact one) in the current
/// one, once: records and token entries re-encoded, tokens re-keyed by session, the `keys` tree
/// filled. Batches of 10 000; a crash halfway leaves values of both encodings (both decode) and
/// tokens under both keys (each batch moves one, atomically), and the next start goes on from
/// there. Then `format` is set and flushed.
fn upgrade(sessions: &sled::Tree, tokens: &sled::Tree, keys: &sled::Tree, meta: &sled::Tree) -> Result<(), StoreError> {
    if meta.get(FORMAT).map_err(sled_err)?.is_some_and(|v| v.first() == Some(&LAYOUT)) {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let mut converted = 0usize;
    // Tokens: keyed by hash (32 bytes) before, by session ++ hash (40) now.
    let mut batch = sled::Batch::default();
    let mut n = 0;
    for kv in tokens.iter() {
        let (k, v) = kv.map_err(sled_err)?;
        let Ok(hash) = <TokenHash>::try_from(k.as_ref()) else { continue };
        let e = codec::decode_token(&v)?;
        batch.insert(&token_key(e.session, &hash)[..], codec::encode_token(&e)?);
        batch.remove(k.as_ref());
        n += 1;
        if n >= 10_000 {
            converted += n;
            tokens.apply_batch(std::mem::take(&mut batch)).map_err(sled_err)?;
            n = 0;
        }
    }
    converted += n;
    tokens.apply_batch(batch).map_err(sled_err)?;
    let (mut batch, mut key_batch, mut n) = (sled::Batch::default(), sled::Batch::default(), 0);
    for kv in sessions.iter() {
        let (k, v) = kv.map_err(sled_err)?;
        if !codec::is_legacy(&v) {
            continue;
        }
        let rec = codec::decode_session(&v)?;
        batch.insert(k.as_ref(), codec::encode_session(&rec)?);
        for k in unminted_keys(rec.id, &rec.sid, &rec.document_id) {
            key_batch.insert(k.as_bytes(), &rec.id.to_be_bytes());
        }
        n += 1;
        if n >= 10_000 {
            converted += n;
            // Keys first: a record in the new encoding always has its keys.
            keys.apply_batch(std::mem::take(&mut key_batch)).map_err(sled_err)?;
            sessions.apply_batch(std::mem::take(&mut batch)).map_err(sled_err)?;
            n = 0;
        }
    }
    converted += n;
    keys.apply_batch(key_batch).map_err(sled_err)?;
    sessions.apply_batch(batch).map_err(sled_err)?;
    meta.insert(FORMAT, &[LAYOUT]).map_err(sled_err)?;
    // The one place a blocking flush is allowed besides `flush`: inside `open`, off the async
    // threads.
    #[allow(clippy::disallowed_methods)]
    meta.flush().map_err(sled_err)?;
    if converted > 0 {
        tracing::info!(
            values = converted,
            ms = started.elapsed().as_millis() as u64,
            "store upgraded to the compact layout"
        );
    }
    Ok(())
}

/// Every value of a tree, decoded, in key order.
/// Encodes each item's value (as JSON) next to its key.
fn encode_keyed<T, K, V: serde::Serialize>(
    items: &[T],
    kv: impl Fn(&T) -> (K, &V),
) -> Result<Vec<(K, Vec<u8>)>, StoreError> {
    items
        .iter()
        .map(|item| {
            let (k, v) = kv(item);
            serde_json::to_vec(v).map(|bytes| (k, bytes)).map_err(codec_err)
        })
        .collect()
}

/// Removes the entries keyed by big-endian `ids`, in one batch.
async fn remove_ids(tree: sled::Tree, ids: Vec<u64>) -> Result<(), StoreError> {
    blocking(move || {
        let mut batch = sled::Batch::default();
        for id in ids {
            batch.remove(&id.to_be_bytes());
        }
        tree.apply_batch(batch).map_err(sled_err)
    })
    .await
}

async fn read_all<T: serde::de::DeserializeOwned + Send + 'static>(tree: sled::Tree) -> Result<Vec<T>, StoreError> {
    blocking(move || {
        tree.iter()
            .map(|kv| {
                let (_, v) = kv.map_err(sled_err)?;
                serde_json::from_slice(&v).map_err(codec_err)
            })
            .collect()
    })
    .await
}

/// Audit keys sort by time: 8 bytes of unix ms, then 8 bytes of a unique sequence.
fn audit_key(time_ms: i64, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&(time_ms.max(0) as u64).to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

impl SledStore {
    /// Every block record (startup).
    pub async fn load_blocks(&self) -> Result<Vec<BlockRecord>, StoreError> {
        read_all(self.blocks.clone()).await
    }

    /// Blocks (`Some`) or unblocks (`None`) a user durably, queueing `event` for replication in
    /// the same transaction.
    pub async fn set_block(
        &self,
        user_id: &str,
        rec: Option<BlockRecord>,
        event: Option<Vec<u8>>,
    ) -> Result<(), StoreError> {
        let me = self.clone();
        let key = user_id.as_bytes().to_vec();
        blocking(move || {
            let value = rec.map(|r| serde_json::to_vec(&r)).transpose().map_err(codec_err)?;
            let out_id = event.as_ref().map(|_| me.db.generate_id()).transpose().map_err(sled_err)?;
            (&me.blocks, &me.outbox)
                .transaction(|(blocks, out)| {
                    match &value {
                        Some(v) => blocks.insert(key.as_slice(), v.as_slice())?,
                        None => blocks.remove(key.as_slice())?,
                    };
                    if let (Some(id), Some(e)) = (out_id, &event) {
                        out.insert(&id.to_be_bytes(), e.as_slice())?;
                    }
                    Ok(())
                })
                .map_err(|e: sled::transaction::TransactionError<()>| sled_err(format!("{e:?}")))
        })
        .await?;
        self.flush().await
    }

    /// The whole revocation queue (it holds only sessions whose backend revocation is pending,
    /// so it stays small).
    pub async fn revocations(&self) -> Result<Vec<RevocationRecord>, StoreError> {
        read_all(self.revocations.clone()).await
    }

    /// The queue entries of `ids` that exist.
    pub async fn revocations_of(&self, ids: Vec<u64>) -> Result<Vec<RevocationRecord>, StoreError> {
        let tree = self.revocations.clone();
        blocking(move || {
            let mut out = Vec::new();
            for id in ids {
                if let Some(v) = tree.get(id.to_be_bytes()).map_err(sled_err)? {
                    out.push(serde_json::from_slice(&v).map_err(codec_err)?);
                }
            }
            Ok(out)
        })
        .await
    }

    /// Updates queue entries (attempts, next try). Not flushed: a lost update only repeats an
    /// attempt.
    pub async fn put_revocations(&self, recs: Vec<RevocationRecord>) -> Result<(), StoreError> {
        let tree = self.revocations.clone();
        blocking(move || {
            let mut batch = sled::Batch::default();
            for r in recs {
                batch.insert(&r.session.to_be_bytes(), serde_json::to_vec(&r).map_err(codec_err)?);
            }
            tree.apply_batch(batch).map_err(sled_err)
        })
        .await
    }

    /// Removes settled entries. Not flushed: a lost removal only repeats a revocation, which the
    /// backend answers as already done.
    pub async fn delete_revocations(&self, ids: Vec<u64>) -> Result<(), StoreError> {
        remove_ids(self.revocations.clone(), ids).await
    }

    /// The oldest `limit` queued replication events, with their queue keys.
    pub async fn outbox_peek(&self, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let tree = self.outbox.clone();
        blocking(move || {
            tree.iter()
                .take(limit)
                .map(|kv| {
                    let (k, v) = kv.map_err(sled_err)?;
                    Ok((decode_i64(&k) as u64, v.to_vec()))
                })
                .collect()
        })
        .await
    }

    /// Removes published events from the queue.
    pub async fn outbox_delete(&self, keys: Vec<u64>) -> Result<(), StoreError> {
        remove_ids(self.outbox.clone(), keys).await
    }

    /// Events waiting to be published (a scan: for metrics, not for hot paths).
    pub async fn outbox_len(&self) -> Result<usize, StoreError> {
        let tree = self.outbox.clone();
        blocking(move || Ok(tree.len())).await
    }

    pub async fn meta_get(&self, key: &'static str) -> Result<Option<Vec<u8>>, StoreError> {
        let tree = self.meta.clone();
        blocking(move || Ok(tree.get(key.as_bytes()).map_err(sled_err)?.map(|v| v.to_vec()))).await
    }

    /// Writes bookkeeping values durably.
    pub async fn meta_set(&self, values: Vec<(&'static str, Vec<u8>)>) -> Result<(), StoreError> {
        let tree = self.meta.clone();
        blocking(move || {
            let mut batch = sled::Batch::default();
            for (k, v) in values {
                batch.insert(k.as_bytes(), v);
            }
            tree.apply_batch(batch).map_err(sled_err)
        })
        .await?;
        self.flush().await
    }

    /// Appends audit events (in the order given).
    pub async fn append_audit(&self, events: Vec<AuditRecord>) -> Result<(), StoreError> {
        let (db, tree) = (self.db.clone(), self.audit.clone());
        blocking(move || {
            let mut batch = sled::Batch::default();
            for e in events {
                let seq = db.generate_id().map_err(sled_err)?;
                batch.insert(&audit_key(e.time, seq), serde_json::to_vec(&e).map_err(codec_err)?);
            }
            tree.apply_batch(batch).map_err(sled_err)
        })
        .await
    }

    /// Up to `limit` audit events with `since_ms <= time < until_ms`, starting after the key
    /// `after` (a cursor returned by a previous page).
    pub async fn scan_audit(
        &self,
        since_ms: i64,
        until_ms: i64,
        after: Option<[u8; 16]>,
        limit: usize,
    ) -> Result<Vec<([u8; 16], AuditRecord)>, StoreError> {
        let tree = self.audit.clone();
        blocking(move || {
            let end = audit_key(until_ms, 0);
            let mut out = Vec::new();
            let iter = match after {
                Some(k) => tree.range((std::ops::Bound::Excluded(k.to_vec()), std::ops::Bound::Excluded(end.to_vec()))),
                None => tree.range(audit_key(since_ms, 0).to_vec()..end.to_vec()),
            };
            for kv in iter.take(limit) {
                let (k, v) = kv.map_err(sled_err)?;
                let key = <[u8; 16]>::try_from(k.as_ref()).map_err(|_| StoreError::Codec("audit key".into()))?;
                out.push((key, serde_json::from_slice(&v).map_err(codec_err)?));
            }
            Ok(out)
        })
        .await
    }

    /// Deletes audit events older than `before_ms`, at most `limit` per call; returns how many.
    pub async fn purge_audit(&self, before_ms: i64, limit: usize) -> Result<usize, StoreError> {
        let tree = self.audit.clone();
        blocking(move || {
            let keys: Vec<sled::IVec> = tree
                .range(..audit_key(before_ms, 0).to_vec())
                .keys()
                .take(limit)
                .collect::<Result<_, _>>()
                .map_err(sled_err)?;
            let mut batch = sled::Batch::default();
            for k in &keys {
                batch.remove(k.clone());
            }
            tree.apply_batch(batch).map_err(sled_err)?;
            Ok(keys.len())
        })
        .await
    }
}

impl SledStore {
    /// A fresh id for an alert record.
    pub async fn alert_id(&self) -> Result<u64, StoreError> {
        let db = self.db.clone();
        blocking(move || db.generate_id().map_err(sled_err)).await
    }

    /// Writes alert records durably (the queue must survive a crash).
    pub async fn put_alerts(&self, recs: Vec<AlertRecord>) -> Result<(), StoreError> {
        let tree = self.alerts.clone();
        blocking(move || {
            let mut batch = sled::Batch::default();
            for r in &recs {
                batch.insert(&r.id.to_be_bytes(), serde_json::to_vec(r).map_err(codec_err)?);
            }
            tree.apply_batch(batch).map_err(sled_err)
        })
        .await?;
        self.flush().await
    }

    /// Every alert record, oldest first.
    pub async fn alerts(&self) -> Result<Vec<AlertRecord>, StoreError> {
        read_all(self.alerts.clone()).await
    }

    pub async fn delete_alerts(&self, ids: Vec<u64>) -> Result<(), StoreError> {
        remove_ids(self.alerts.clone(), ids).await
    }
}

fn decode_i64(v: &[u8]) -> i64 {
    <[u8; 8]>::try_from(v).map(i64::from_be_bytes).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sled_store_meets_the_contract() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path(), 8 << 20).await.expect("open");
        super::super::contract::run(&store).await;
    }

    #[tokio::test]
    async fn audit_is_ordered_by_time_paged_and_purged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path(), 8 << 20).await.expect("open");
        let ev = |t: i64| AuditRecord {
            time: t,
            kind: "login".into(),
            user: None,
            session: None,
            ip: None,
            actor: None,
            details: serde_json::Value::Null,
        };
        store.append_audit(vec![ev(30), ev(10), ev(20), ev(20)]).await.expect("append");
        let all = store.scan_audit(0, i64::MAX, None, 100).await.expect("scan");
        assert_eq!(all.iter().map(|(_, e)| e.time).collect::<Vec<_>>(), vec![10, 20, 20, 30]);
        let page1 = store.scan_audit(15, 30, None, 1).await.expect("scan");
        let page2 = store.scan_audit(15, 30, Some(page1[0].0), 10).await.expect("scan");
        assert_eq!((page1.len(), page2.len()), (1, 1), "since inclusive, until exclusive, cursor continues");
        assert_eq!(store.purge_audit(25, 100).await.expect("purge"), 3);
        assert_eq!(store.scan_audit(0, i64::MAX, None, 100).await.expect("scan").len(), 1);
    }

    /// A directory in use stays refused (after the short wait for a lock being released); once
    /// the store is dropped, it opens.
    #[tokio::test]
    async fn a_locked_directory_is_refused_and_a_released_one_opens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = SledStore::open(dir.path(), 1 << 20).await.expect("open");
        let started = std::time::Instant::now();
        let second = SledStore::open(dir.path(), 1 << 20).await;
        assert!(matches!(&second, Err(StoreError::Sled(e)) if e.contains("lock")), "{:?}", second.err());
        assert!(started.elapsed() >= LOCK_WAIT, "it waited for the lock first");
        drop(first);
        SledStore::open(dir.path(), 1 << 20).await.expect("reopens once released");
    }

    #[tokio::test]
    async fn durable_changes_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = SledStore::open(dir.path(), 8 << 20).await.expect("open");
            let mut rec = super::super::contract::record(3, "u");
            rec.logout_time = Some(5);
            store.apply(Changes { put_sessions: vec![rec], ..Default::default() }, true).await.expect("apply");
        }
        let store = SledStore::open(dir.path(), 8 << 20).await.expect("reopen");
        let rec = store.get(3).await.expect("get").expect("present");
        assert_eq!(rec.logout_time, Some(5));
    }
}
