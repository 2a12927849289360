//! When deferred mail is tried again, and when it is given up: exponential backoff from
//! `minimal_backoff_time`, doubling per attempt up to `maximal_backoff_time`; after
//! `maximal_queue_lifetime` (`bounce_queue_lifetime` for bounces, whose sender is `<>`) a
//! recipient that is still deferred bounces with its last reason.

use std::time::Duration;

use crate::config::Config;
use crate::sysexits::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub minimal_backoff: Duration,
    pub maximal_backoff: Duration,
    pub queue_lifetime: Duration,
    pub bounce_lifetime: Duration,
}

impl RetryPolicy {
    pub fn from_config(config: &Config) -> Result<RetryPolicy> {
        Ok(RetryPolicy {
            minimal_backoff: config.time("minimal_backoff_time")?,
            maximal_backoff: config.time("maximal_backoff_time")?,
            queue_lifetime: config.time("maximal_queue_lifetime")?,
            bounce_lifetime: config.time("bounce_queue_lifetime")?,
        })
    }

    /// The wait after the `attempts`-th failed attempt (1 for the first): minimal, then
    /// doubling, never above maximal. A maximal below the minimal is read as the minimal,
    /// as Postfix does.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let min = self.minimal_backoff.max(Duration::from_secs(1));
        let max = self.maximal_backoff.max(min);
        let doublings = attempts.saturating_sub(1).min(40);
        min.saturating_mul(1u32 << doublings.min(31)).min(max)
    }

    /// Whether a message that arrived at `arrival_secs` has outlived its lifetime at
    /// `now_secs`. A lifetime of 0 means "bounce at the first deferral", as in Postfix.
    pub fn expired(&self, bounce: bool, arrival_secs: i64, now_secs: i64) -> bool {
        let lifetime = if bounce {
            self.bounce_lifetime
        } else {
            self.queue_lifetime
        };
        now_secs.saturating_sub(arrival_secs) >= lifetime.as_secs() as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(min: u64, max: u64) -> RetryPolicy {
        RetryPolicy {
            minimal_backoff: Duration::from_secs(min),
            maximal_backoff: Duration::from_secs(max),
            queue_lifetime: Duration::from_secs(5 * 86400),
            bounce_lifetime: Duration::from_secs(3600),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let p = policy(300, 4000);
        let got: Vec<u64> = (1..=6).map(|n| p.backoff(n).as_secs()).collect();
        assert_eq!(got, vec![300, 600, 1200, 2400, 4000, 4000]);
        assert_eq!(p.backoff(0).as_secs(), 300);
        assert_eq!(p.backoff(u32::MAX).as_secs(), 4000);
        // A maximum below the minimum is the minimum.
        assert_eq!(policy(300, 10).backoff(5).as_secs(), 300);
        assert_eq!(policy(0, 0).backoff(3).as_secs(), 1);
    }

    #[test]
    fn lifetimes_depend_on_the_sender() {
        let p = policy(300, 4000);
        assert!(!p.expired(false, 1000, 1000 + 4 * 86400));
        assert!(p.expired(false, 1000, 1000 + 5 * 86400));
        assert!(p.expired(true, 1000, 1000 + 3600));
        assert!(!p.expired(true, 1000, 1000 + 3599));
        let zero = RetryPolicy {
            queue_lifetime: Duration::ZERO,
            ..p
        };
        assert!(zero.expired(false, 1000, 1000));
    }
}
