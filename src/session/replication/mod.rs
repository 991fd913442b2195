//! Replication: what one instance tells the others, and how it is merged here. The transport
//! (Redis streams, snapshots) is `cluster/`; the events ([`event`]) and their merge (`apply`)
//! are session state, so they live here.

mod apply;
pub mod event;

pub use apply::merge;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Clone)]
/// How this instance takes part in replication (`cluster/` carries it).
pub struct Replication {
    /// This instance's id class: its session ids are `n * slots + slot`, so instances never
    /// hand out the same id. A single instance has one slot (ids 1, 2, 3, …).
    pub slot: u64,
    pub slots: u64,
    /// Woken after every change queued for publishing.
    pub notify: Arc<tokio::sync::Notify>,
    /// Last-active times waiting for the next publish, latest per session.
    touches: Arc<Mutex<HashMap<u64, i64>>>,
}

impl Replication {
    pub fn standalone() -> Replication {
        Replication::new(0, 1)
    }

    /// One of `slots` instances (a cluster).
    pub fn new(slot: u64, slots: u64) -> Replication {
        Replication { slot, slots, notify: Arc::new(tokio::sync::Notify::new()), touches: Default::default() }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.slots > 1
    }

    /// Queues last-active times for the next publish (the touch writer calls this).
    pub fn queue_touches(&self, batch: &[(u64, i64)]) {
        if !self.enabled() {
            return;
        }
        {
            let mut t = crate::sync::lock(&self.touches);
            for (id, ms) in batch {
                let e = t.entry(*id).or_insert(*ms);
                *e = (*e).max(*ms);
            }
        }
    }

    /// The queued last-active times, emptying the queue (the publisher calls this).
    pub fn take_touches(&self) -> Vec<(u64, i64)> {
        crate::sync::lock(&self.touches).drain().collect()
    }
}
