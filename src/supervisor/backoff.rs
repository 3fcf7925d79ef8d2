//! Exponential backoff between restarts: a validated value with a pure
//! [`Backoff::delay`] (`initial · 2^attempt`, capped at `max`) and jitter
//! that only ever shortens a delay, by at most `jitter` of it, so delays
//! still grow while they are below the cap.

use std::time::Duration;

/// How long to wait before restart number `attempt` (0-based).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    /// Fraction in `[0, 0.5)` of a delay that jitter may take off.
    jitter: f64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BackoffError {
    #[error("backoff_initial_ms must be at least 1")]
    ZeroInitial,
    #[error("backoff_max_ms ({max:?}) must be at least backoff_initial_ms ({initial:?})")]
    MaxBelowInitial { initial: Duration, max: Duration },
    #[error("jitter must be in [0, 0.5), got {0}")]
    Jitter(f64),
}

impl Backoff {
    /// The default jitter: up to 10% off each delay.
    pub const JITTER: f64 = 0.1;

    pub fn try_new(initial: Duration, max: Duration, jitter: f64) -> Result<Self, BackoffError> {
        if initial.is_zero() {
            return Err(BackoffError::ZeroInitial);
        }
        if max < initial {
            return Err(BackoffError::MaxBelowInitial { initial, max });
        }
        if !(0.0..0.5).contains(&jitter) {
            return Err(BackoffError::Jitter(jitter));
        }
        Ok(Backoff {
            initial,
            max,
            jitter,
        })
    }

    /// The delay before restart `attempt`, without jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.initial
            .checked_mul(factor)
            .map_or(self.max, |d| d.min(self.max))
    }

    /// The delay with jitter; `unit` is a uniform random number in `[0, 1)`.
    pub fn jittered(&self, attempt: u32, unit: f64) -> Duration {
        let unit = unit.clamp(0.0, 1.0);
        self.delay(attempt).mul_f64(1.0 - self.jitter * unit)
    }

    /// Sleeps the jittered delay for `attempt`.
    pub async fn sleep(&self, attempt: u32) {
        tokio::time::sleep(self.jittered(attempt, rand::random::<f64>())).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn invalid_values_are_refused() {
        assert_eq!(
            Backoff::try_new(ms(0), ms(10), 0.1),
            Err(BackoffError::ZeroInitial)
        );
        assert!(matches!(
            Backoff::try_new(ms(20), ms(10), 0.1),
            Err(BackoffError::MaxBelowInitial { .. })
        ));
        assert_eq!(
            Backoff::try_new(ms(1), ms(10), 0.5),
            Err(BackoffError::Jitter(0.5))
        );
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let b = Backoff::try_new(ms(100), ms(1000), 0.0).unwrap();
        let got: Vec<u64> = (0..6).map(|a| b.delay(a).as_millis() as u64).collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.delay(u32::MAX), ms(1000));
    }

    #[test]
    fn jitter_only_shortens_and_delays_still_grow() {
        let b = Backoff::try_new(ms(100), ms(30_000), Backoff::JITTER).unwrap();
        for attempt in 0..8 {
            let full = b.delay(attempt);
            assert_eq!(b.jittered(attempt, 0.0), full);
            let shortest = b.jittered(attempt, 0.999_999);
            assert!(shortest <= full && shortest >= full.mul_f64(0.9) - ms(1));
            // the shortest next delay is longer than the longest current one
            assert!(b.jittered(attempt + 1, 0.999_999) > full);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_waits_within_the_jitter_band() {
        let b = Backoff::try_new(ms(100), ms(30_000), Backoff::JITTER).unwrap();
        for attempt in 0..5 {
            let start = tokio::time::Instant::now();
            b.sleep(attempt).await;
            let waited = start.elapsed();
            let full = b.delay(attempt);
            assert!(
                waited <= full && waited >= full.mul_f64(0.9) - ms(1),
                "attempt {attempt}: waited {waited:?}, full {full:?}"
            );
        }
    }
}
