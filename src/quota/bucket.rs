//! A token bucket that may also go into debt: the arithmetic behind every
//! per-minute quota.
//!
//! Calls per minute take one token before the call ([`Bucket::try_take`]).
//! SQLite time, rows and bytes are known only once the call has run, so
//! they are charged afterwards ([`Bucket::charge`]) and may drive the level
//! below zero; the next call is admitted once the level is back above zero
//! ([`Bucket::wait`]). Either way a principal gets at most its rate over
//! time, plus one burst (and, for what is charged afterwards, what its calls
//! admitted together spent before the debt was known).

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Bucket {
    /// The most the bucket holds (the burst).
    capacity: f64,
    /// Tokens added per second.
    rate: f64,
    level: f64,
    updated: Instant,
}

impl Bucket {
    /// A full bucket holding `capacity` that refills `per_minute` a minute.
    pub fn new(capacity: f64, per_minute: f64, now: Instant) -> Self {
        Self {
            capacity,
            rate: per_minute / 60.0,
            level: capacity,
            updated: now,
        }
    }

    /// The same bucket with new limits (a reload), keeping what was spent:
    /// a reload must not hand out a fresh burst.
    pub fn with_limits(&self, capacity: f64, per_minute: f64, now: Instant) -> Self {
        let mut bucket = self.clone();
        bucket.refill(now);
        bucket.capacity = capacity;
        bucket.rate = per_minute / 60.0;
        bucket.level = bucket.level.min(capacity);
        bucket
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.level = (self.level + elapsed * self.rate).min(self.capacity);
        self.updated = self.updated.max(now);
    }

    /// Takes `amount` if the bucket holds it; otherwise says how long until
    /// it will.
    pub fn try_take(&mut self, amount: f64, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.level >= amount {
            self.level -= amount;
            Ok(())
        } else {
            Err(self.time_to(amount))
        }
    }

    /// Whether a call may start: the level is above zero. Otherwise how
    /// long until it is.
    pub fn wait(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.level > 0.0 {
            Ok(())
        } else {
            Err(self.time_to(f64::MIN_POSITIVE))
        }
    }

    /// Charges `amount` already spent, going into debt if need be. The
    /// debt is paid back in full, so calls run at once cannot spend more
    /// than the rate by being admitted together; at most an hour's worth is
    /// kept (what no principal can spend with the per-call limits).
    pub fn charge(&mut self, amount: f64, now: Instant) {
        self.refill(now);
        self.level = (self.level - amount).max(-self.rate * 3600.0);
    }

    /// Whether it holds all it can: nothing spent that is not paid back.
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.level >= self.capacity
    }

    fn time_to(&self, level: f64) -> Duration {
        if self.rate <= 0.0 {
            return Duration::MAX;
        }
        Duration::from_secs_f64(((level - self.level) / self.rate).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_gives_its_burst_then_refuses_until_it_refills() {
        let start = Instant::now();
        let mut bucket = Bucket::new(3.0, 60.0, start);
        for _ in 0..3 {
            bucket.try_take(1.0, start).unwrap();
        }
        let wait = bucket.try_take(1.0, start).unwrap_err();
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(bucket
            .try_take(1.0, start + Duration::from_millis(500))
            .is_err());
        assert!(bucket.try_take(1.0, start + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn a_charge_past_the_level_blocks_until_the_debt_is_paid() {
        let start = Instant::now();
        let mut bucket = Bucket::new(100.0, 600.0, start);
        bucket.wait(start).unwrap();
        bucket.charge(150.0, start);
        // 50 in debt at 10 a second: five seconds.
        let wait = bucket.wait(start).unwrap_err();
        assert!((wait.as_secs_f64() - 5.0).abs() < 0.01, "{wait:?}");
        assert!(bucket.wait(start + Duration::from_secs(4)).is_err());
        assert!(bucket.wait(start + Duration::from_secs(6)).is_ok());
    }

    #[test]
    fn calls_admitted_together_pay_back_everything_they_spent() {
        let start = Instant::now();
        // 60 a minute; eight calls admitted at once spend 30 each.
        let mut bucket = Bucket::new(60.0, 60.0, start);
        for _ in 0..8 {
            bucket.charge(30.0, start);
        }
        // 240 spent, 60 in hand: 180 owed at one a second.
        let wait = bucket.wait(start).unwrap_err();
        assert!((wait.as_secs_f64() - 180.0).abs() < 0.01, "{wait:?}");
    }

    #[test]
    fn debt_is_capped_at_an_hour() {
        let start = Instant::now();
        let mut bucket = Bucket::new(10.0, 60.0, start);
        bucket.charge(1e12, start);
        let wait = bucket.wait(start).unwrap_err();
        assert!(wait <= Duration::from_secs(3601), "{wait:?}");
    }

    #[test]
    fn new_limits_keep_what_was_spent() {
        let start = Instant::now();
        let mut bucket = Bucket::new(2.0, 60.0, start);
        bucket.try_take(2.0, start).unwrap();
        let mut reloaded = bucket.with_limits(100.0, 60.0, start);
        assert!(reloaded.try_take(1.0, start).is_err());
    }
}
