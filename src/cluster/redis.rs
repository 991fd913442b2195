//! The only module that talks to Redis.
//!
//! Keys (all under one hash tag, so they share a Redis Cluster slot and a Lua script may touch
//! several): `{p}:events` (the stream), `{p}:seq` (number of events ever added), `{p}:epoch`
//! (random id of the stream's history; a Redis that lost its data gets a new one),
//! `{p}:slots` (id-class allocator), `{p}:nodes` (hash: slot → heartbeat JSON),
//! `{p}:snapreq:<slot>` (snapshot requests to one instance), `{p}:snap:<rid>` (one snapshot's
//! chunks, expiring).
//!
//! Every call is bounded by the connection's response timeout, so a hung Redis (SIGSTOP, a
//! partition) costs a background task a timeout, never a client request.

use std::collections::HashMap;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("redis: {0}")]
    Redis(String),
    #[error("unexpected reply: {0}")]
    Protocol(String),
}

impl From<redis::RedisError> for LinkError {
    fn from(e: redis::RedisError) -> Self {
        LinkError::Redis(e.to_string())
    }
}

impl From<crate::store::StoreError> for LinkError {
    fn from(e: crate::store::StoreError) -> Self {
        LinkError::Protocol(format!("store: {e}"))
    }
}

impl From<redis::ParsingError> for LinkError {
    fn from(e: redis::ParsingError) -> Self {
        LinkError::Protocol(e.to_string())
    }
}

/// INCR of the sequence and XADD in one atomic step: stream order and sequence order agree, so
/// a receiver that sees sequence n+2 after n knows it missed an event (the stream was trimmed).
const PUBLISH: &str = r"
local seq = redis.call('INCR', KEYS[2])
return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'n', ARGV[2], 's', seq, 'v', ARGV[3], 'k', ARGV[4], 'e', ARGV[5])
";

/// Snapshot chunks expire if the requester went away.
const SNAPSHOT_TTL_SECS: i64 = 300;

pub struct Link {
    source: Source,
    prefix: String,
    connect_timeout: Duration,
    command_timeout: Duration,
}

/// One published event as read back from the stream.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: String,
    pub node: u64,
    pub seq: u64,
    pub version: u32,
    pub kind: String,
    pub payload: Vec<u8>,
}

impl Entry {
    /// Publication time: stream ids start with the Redis server's clock in ms.
    pub fn time_ms(&self) -> i64 {
        self.id.split('-').next().and_then(|ms| ms.parse().ok()).unwrap_or(0)
    }
}

/// What to publish: kind label and encoded event.
pub struct Outgoing<'a> {
    pub kind: &'a str,
    pub payload: &'a [u8],
}

/// Where connections go: one server, or whichever master the Sentinels name at connect time
/// (so a failover is followed at the next reconnect).
enum Source {
    Direct(redis::Client),
    Sentinel(tokio::sync::Mutex<redis::sentinel::SentinelClient>),
}

/// Sentinel discovery settings.
pub struct SentinelSpec<'a> {
    pub sentinels: &'a [String],
    pub master: &'a str,
}

impl Link {
    /// `url`: the server, or with Sentinel the master's credentials, database and TLS mode
    /// (its host is not used). `ca_pem`: trust anchors for TLS instead of the system's.
    pub fn new(
        url: Option<&str>,
        sentinel: Option<SentinelSpec<'_>>,
        ca_pem: Option<Vec<u8>>,
        prefix: &str,
        connect_timeout: Duration,
        command_timeout: Duration,
    ) -> Result<Link, String> {
        let certs = |pem: Vec<u8>| redis::TlsCertificates { client_tls: None, root_cert: Some(pem) };
        let source = match (sentinel, url) {
            (None, Some(url)) => Source::Direct(
                match ca_pem {
                    Some(pem) => redis::Client::build_with_tls(url, certs(pem)),
                    None => redis::Client::open(url),
                }
                .map_err(|e| e.to_string())?,
            ),
            (None, None) => return Err("no Redis URL".into()),
            (Some(spec), url) => {
                use redis::IntoConnectionInfo;
                let mut addrs = Vec::new();
                for s in spec.sentinels {
                    let info = s.as_str().into_connection_info().map_err(|e| format!("sentinel {s}: {e}"))?;
                    addrs.push(info.addr().clone());
                }
                let mut b = redis::sentinel::SentinelClientBuilder::new(
                    addrs,
                    spec.master,
                    redis::sentinel::SentinelServerType::Master,
                )
                .map_err(|e| e.to_string())?;
                if let Some(url) = url {
                    let info = url.into_connection_info().map_err(|e| e.to_string())?;
                    let r = info.redis_settings();
                    if let Some(u) = r.username() {
                        b = b.set_client_to_redis_username(u);
                    }
                    if let Some(p) = r.password() {
                        b = b.set_client_to_redis_password(p);
                    }
                    b = b.set_client_to_redis_db(r.db());
                    if matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }) {
                        b = b.set_client_to_redis_tls_mode(redis::TlsMode::Secure);
                    }
                }
                if let Some(pem) = ca_pem {
                    b = b.set_client_to_redis_certificates(certs(pem));
                }
                Source::Sentinel(tokio::sync::Mutex::new(b.build().map_err(|e| e.to_string())?))
            }
        };
        Ok(Link { source, prefix: prefix.to_string(), connect_timeout, command_timeout })
    }

    fn key(&self, name: &str) -> String {
        format!("{{{}}}:{name}", self.prefix)
    }

    /// A new connection whose calls time out after the command timeout plus `blocking` (for
    /// connections that issue blocking reads).
    pub async fn connect(&self, blocking: Duration) -> Result<Conn<'_>, LinkError> {
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.command_timeout + blocking));
        let conn = match &self.source {
            Source::Direct(client) => client.get_multiplexed_async_connection_with_config(&cfg).await?,
            Source::Sentinel(sentinel) => {
                let lookup = async { sentinel.lock().await.async_get_client().await };
                let client = tokio::time::timeout(self.connect_timeout, lookup)
                    .await
                    .map_err(|_| LinkError::Redis("no Sentinel answered in time".into()))??;
                client.get_multiplexed_async_connection_with_config(&cfg).await?
            }
        };
        Ok(Conn { conn, link: self })
    }
}

pub struct Conn<'a> {
    conn: redis::aio::MultiplexedConnection,
    link: &'a Link,
}

fn string(v: Option<&redis::Value>) -> Option<String> {
    v.and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
}

fn entry(s: &redis::streams::StreamId) -> Result<Entry, LinkError> {
    let num = |k: &str| string(s.map.get(k)).and_then(|v| v.parse::<u64>().ok());
    let bad = || LinkError::Protocol(format!("stream entry {} lacks a field", s.id));
    Ok(Entry {
        id: s.id.clone(),
        node: num("n").ok_or_else(bad)?,
        seq: num("s").ok_or_else(bad)?,
        version: num("v").ok_or_else(bad)? as u32,
        kind: string(s.map.get("k")).unwrap_or_default(),
        payload: s.map.get("e").and_then(|v| redis::from_redis_value_ref::<Vec<u8>>(v).ok()).ok_or_else(bad)?,
    })
}

impl Conn<'_> {
    /// Appends events (in order) in one pipeline; returns their stream ids.
    pub async fn publish(
        &mut self,
        node: u64,
        version: u32,
        max_len: usize,
        events: &[Outgoing<'_>],
    ) -> Result<Vec<String>, LinkError> {
        let (stream, seq) = (self.link.key("events"), self.link.key("seq"));
        let mut pipe = redis::pipe();
        for e in events {
            pipe.cmd("EVAL")
                .arg(PUBLISH)
                .arg(2)
                .arg(&stream)
                .arg(&seq)
                .arg(max_len)
                .arg(node)
                .arg(version)
                .arg(e.kind)
                .arg(e.payload);
        }
        Ok(pipe.query_async(&mut self.conn).await?)
    }

    /// Up to `count` entries after `after`, waiting up to `block` for the first one.
    pub async fn read(&mut self, after: &str, count: usize, block: Duration) -> Result<Vec<Entry>, LinkError> {
        let reply: Option<redis::streams::StreamReadReply> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS")
            .arg(self.link.key("events"))
            .arg(after)
            .query_async(&mut self.conn)
            .await?;
        let mut out = Vec::new();
        for k in reply.map(|r| r.keys).unwrap_or_default() {
            for id in &k.ids {
                out.push(entry(id)?);
            }
        }
        Ok(out)
    }

    /// The oldest entry still in the stream.
    pub async fn oldest(&mut self) -> Result<Option<Entry>, LinkError> {
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(self.link.key("events"))
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut self.conn)
            .await?;
        reply.ids.first().map(entry).transpose()
    }

    /// Number of events ever added to the stream (the newest sequence number).
    pub async fn sequence(&mut self) -> Result<u64, LinkError> {
        let v: Option<u64> = redis::cmd("GET").arg(self.link.key("seq")).query_async(&mut self.conn).await?;
        Ok(v.unwrap_or(0))
    }

    /// The id of the stream's history, created (with `fresh`) if Redis has none.
    pub async fn epoch(&mut self, fresh: &str) -> Result<String, LinkError> {
        let key = self.link.key("epoch");
        let _: Option<String> = redis::cmd("SET").arg(&key).arg(fresh).arg("NX").query_async(&mut self.conn).await?;
        let v: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut self.conn).await?;
        v.ok_or_else(|| LinkError::Protocol("epoch vanished".into()))
    }

    /// A fresh id class for a new instance.
    pub async fn allocate_slot(&mut self, slots: u64) -> Result<u64, LinkError> {
        let n: u64 = redis::cmd("INCR").arg(self.link.key("slots")).query_async(&mut self.conn).await?;
        Ok((n - 1) % slots)
    }

    pub async fn heartbeat(&mut self, slot: u64, info: &str) -> Result<(), LinkError> {
        let _: i64 =
            redis::cmd("HSET").arg(self.link.key("nodes")).arg(slot).arg(info).query_async(&mut self.conn).await?;
        Ok(())
    }

    /// Every instance's last heartbeat, by slot.
    pub async fn nodes(&mut self) -> Result<HashMap<u64, String>, LinkError> {
        let all: HashMap<String, String> =
            redis::cmd("HGETALL").arg(self.link.key("nodes")).query_async(&mut self.conn).await?;
        Ok(all.into_iter().filter_map(|(k, v)| k.parse().ok().map(|k| (k, v))).collect())
    }

    /// Asks instance `peer` for a snapshot.
    pub async fn request_snapshot(&mut self, peer: u64, request: &str) -> Result<(), LinkError> {
        self.push_expiring(&format!("snapreq:{peer}"), request.as_bytes()).await
    }

    /// Appends to a list that expires if nobody reads it (the other side went away).
    async fn push_expiring(&mut self, name: &str, value: &[u8]) -> Result<(), LinkError> {
        let key = self.link.key(name);
        let _: () = redis::pipe()
            .cmd("RPUSH")
            .arg(&key)
            .arg(value)
            .ignore()
            .cmd("EXPIRE")
            .arg(&key)
            .arg(SNAPSHOT_TTL_SECS)
            .ignore()
            .query_async(&mut self.conn)
            .await?;
        Ok(())
    }

    /// The next snapshot request addressed to `slot`, waiting up to `wait`.
    pub async fn next_request(&mut self, slot: u64, wait: Duration) -> Result<Option<String>, LinkError> {
        let key = self.link.key(&format!("snapreq:{slot}"));
        let r: Option<(String, String)> =
            redis::cmd("BLPOP").arg(&key).arg(wait.as_secs_f64()).query_async(&mut self.conn).await?;
        Ok(r.map(|(_, v)| v))
    }

    pub async fn push_chunk(&mut self, rid: &str, chunk: &[u8]) -> Result<(), LinkError> {
        self.push_expiring(&format!("snap:{rid}"), chunk).await
    }

    /// The next chunk of snapshot `rid`, waiting up to `wait`.
    pub async fn pop_chunk(&mut self, rid: &str, wait: Duration) -> Result<Option<Vec<u8>>, LinkError> {
        let key = self.link.key(&format!("snap:{rid}"));
        let r: Option<(String, Vec<u8>)> =
            redis::cmd("BLPOP").arg(&key).arg(wait.as_secs_f64()).query_async(&mut self.conn).await?;
        Ok(r.map(|(_, v)| v))
    }

    pub async fn drop_snapshot(&mut self, rid: &str) -> Result<(), LinkError> {
        let _: i64 = redis::cmd("DEL").arg(self.link.key(&format!("snap:{rid}"))).query_async(&mut self.conn).await?;
        Ok(())
    }
}
