//! Wall-clock time as the gateway reads it: unix milliseconds, and ISO-8601 as the plugin prints
//! it. Every time decision (expiry, idleness, retention, backoff due times) reads a [`Clock`], so
//! tests can drive time instead of sleeping; [`now_ms`] is the system clock for what is only
//! reported (audit and log timestamps).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The system clock, in unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// ISO-8601 UTC with milliseconds and `Z`, as the plugin prints times.
pub fn iso(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// A source of "now": the system clock, or (tests) a manual one that moves only when told.
#[derive(Clone, Default)]
pub struct Clock {
    /// `None`: the system clock. `Some`: an offset in milliseconds added to it, so a driven
    /// clock still moves with real time (timeouts and hold periods keep working) and
    /// [`Clock::advance`] jumps it forward.
    offset: Option<Arc<AtomicI64>>,
}

impl Clock {
    pub fn system() -> Clock {
        Clock { offset: None }
    }

    /// A clock tests can move forward with [`Clock::advance`].
    pub fn driven() -> Clock {
        Clock { offset: Some(Arc::new(AtomicI64::new(0))) }
    }

    pub fn now_ms(&self) -> i64 {
        now_ms() + self.offset.as_ref().map_or(0, |o| o.load(Ordering::Relaxed))
    }

    /// Moves a driven clock forward by `by` (no effect on the system clock).
    pub fn advance(&self, by: Duration) {
        if let Some(o) = &self.offset {
            o.fetch_add(by.as_millis() as i64, Ordering::Relaxed);
        }
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.offset {
            None => f.write_str("Clock::system"),
            Some(o) => write!(f, "Clock::driven(+{} ms)", o.load(Ordering::Relaxed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_has_millis_and_z() {
        assert_eq!(iso(1_767_349_800_000), "2026-01-02T10:30:00.000Z");
    }

    #[test]
    fn a_driven_clock_moves_when_told_and_the_system_clock_does_not() {
        let (sys, driven) = (Clock::system(), Clock::driven());
        let before = driven.now_ms();
        driven.advance(Duration::from_secs(3600));
        sys.advance(Duration::from_secs(3600));
        assert!(driven.now_ms() - before >= 3_600_000);
        assert!((sys.now_ms() - now_ms()).abs() < 1000);
    }
}
