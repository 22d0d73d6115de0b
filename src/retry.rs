//! Exponential backoff for transient SQLite failures (a lock held past
//! `busy_timeout`, a file briefly unopenable). Writes never go through here:
//! retrying a write blindly could apply it twice.

use std::time::Duration;

/// How often and how patiently a transient failure is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RetryPolicy {
    /// Retries after the first attempt; 0 means try once.
    pub max_retries: u32,
    /// Wait before the first retry; each further retry waits twice as long.
    pub first_delay: Duration,
}

impl RetryPolicy {
    /// Runs `attempt` until it succeeds, fails permanently, or the retries
    /// run out. `on_retry` is called before each wait (for counting).
    pub fn run<T, E>(
        &self,
        is_transient: impl Fn(&E) -> bool,
        mut on_retry: impl FnMut(&E),
        mut attempt: impl FnMut() -> Result<T, E>,
    ) -> Result<T, Exhausted<E>> {
        let mut delay = self.first_delay;
        let mut retries = 0;
        loop {
            match attempt() {
                Ok(value) => return Ok(value),
                Err(err) if retries < self.max_retries && is_transient(&err) => {
                    on_retry(&err);
                    std::thread::sleep(delay);
                    delay = delay.saturating_mul(2);
                    retries += 1;
                }
                Err(last) => return Err(Exhausted { last, retries }),
            }
        }
    }
}

/// The last error of a retried operation, with how many retries it took.
#[derive(Debug)]
pub struct Exhausted<E> {
    pub last: E,
    pub retries: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_retries: u32) -> RetryPolicy {
        RetryPolicy {
            max_retries,
            first_delay: Duration::from_millis(1),
        }
    }

    #[test]
    fn transient_failure_is_retried_until_success() {
        let mut calls = 0;
        let result = policy(3).run(
            |_: &&str| true,
            |_| {},
            || {
                calls += 1;
                if calls < 3 {
                    Err("busy")
                } else {
                    Ok(calls)
                }
            },
        );
        assert_eq!(result.unwrap(), 3);
    }

    #[test]
    fn retries_stop_at_the_limit_and_report_the_last_error() {
        let mut retried = 0;
        let result: Result<(), _> =
            policy(2).run(|_: &&str| true, |_| retried += 1, || Err("busy"));
        let err = result.unwrap_err();
        assert_eq!((err.last, err.retries, retried), ("busy", 2, 2));
    }

    #[test]
    fn permanent_failure_is_not_retried() {
        let mut calls = 0;
        let result: Result<(), _> = policy(5).run(
            |_: &&str| false,
            |_| {},
            || {
                calls += 1;
                Err("not a database")
            },
        );
        assert_eq!((result.unwrap_err().retries, calls), (0, 1));
    }
}
