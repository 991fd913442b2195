//! Retry schedules: exponential backoff with jitter, from backon. Without jitter, N instances
//! that lost one Redis (or one alert endpoint) retry in lockstep and hit it together the moment
//! it returns; with it, each delay is drawn from [d, 2d), d doubling from `min` to `max`.

use backon::BackoffBuilder;
use std::time::Duration;

/// An endless schedule of delays for a reconnect loop; start a new one after a success.
pub fn schedule(min: Duration, max: Duration) -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
        .build()
}

/// The delay after failed attempt `attempts` (1-based) of a schedule whose position is stored
/// rather than held in a loop (alert deliveries, backend revocations).
pub fn delay_after(attempts: u32, min: Duration, max: Duration) -> Duration {
    // 64 doublings exceed any cap; past that the schedule is flat, so skip walking it.
    let n = attempts.clamp(1, 64) - 1;
    schedule(min, max).nth(n as usize).unwrap_or(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_with_jitter_up_to_the_cap() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(300));
        for n in 1..=12u32 {
            let base = (min * 2u32.pow(n - 1)).min(max);
            let d = delay_after(n, min, max);
            assert!(d >= base && d < base * 2, "attempt {n}: {d:?} outside [{base:?}, {:?})", base * 2);
        }
        let d = delay_after(u32::MAX, min, max);
        assert!(d >= max && d < max * 2);
        // Jitter: instances that failed together do not retry together.
        let draws: std::collections::BTreeSet<Duration> = (0..20).map(|_| delay_after(5, min, max)).collect();
        assert!(draws.len() > 1, "{draws:?}");
    }
}
