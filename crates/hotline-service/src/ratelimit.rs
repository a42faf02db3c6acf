//! Token-bucket rate limits per user and per client address, and a bucket
//! of failed token checks per address, so access tokens cannot be guessed
//! at speed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

use crate::config::RateLimits;
use crate::{Error, Result};

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Self {
        Bucket {
            tokens: burst,
            at: now,
        }
    }

    /// Tokens now, after refilling at `rate` per second up to `burst`.
    fn refilled(&self, now: Instant, rate: f64, burst: f64) -> f64 {
        (self.tokens + now.duration_since(self.at).as_secs_f64() * rate).min(burst)
    }

    /// Takes one token, or says how long until one is there.
    fn take(&mut self, now: Instant, rate: f64, burst: f64) -> Result<()> {
        self.tokens = self.refilled(now, rate, burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(limit_exceeded(self.tokens, rate))
        }
    }
}

fn limit_exceeded(tokens: f64, rate: f64) -> Error {
    Error::LimitExceeded {
        retry_after_ms: ((1.0 - tokens) / rate * 1000.0).ceil() as u64,
    }
}

pub struct RateLimiter {
    limits: RateLimits,
    buckets: Mutex<HashMap<String, Bucket>>,
    /// Failed token checks per client address, on the per-address limits.
    /// Only addresses that failed are in it, so a server nobody probes
    /// checks one atomic per request.
    auth_failures: Mutex<HashMap<IpAddr, Bucket>>,
    failing_addresses: AtomicUsize,
}

impl RateLimiter {
    pub fn new(limits: RateLimits) -> Self {
        Self {
            limits,
            buckets: Mutex::new(HashMap::new()),
            auth_failures: Mutex::new(HashMap::new()),
            failing_addresses: AtomicUsize::new(0),
        }
    }

    /// Refuses an address that has used up its failed token checks.
    pub fn check_auth_failures(&self, ip: Option<IpAddr>) -> Result<()> {
        let rate = self.limits.per_ip_per_second;
        if rate <= 0.0 || self.failing_addresses.load(Ordering::Relaxed) == 0 {
            return Ok(());
        }
        let Some(ip) = ip else { return Ok(()) };
        let failures = self.auth_failures.lock();
        match failures.get(&ip) {
            Some(b) => {
                let tokens = b.refilled(Instant::now(), rate, self.limits.per_ip_burst);
                if tokens >= 1.0 {
                    Ok(())
                } else {
                    Err(limit_exceeded(tokens, rate))
                }
            }
            None => Ok(()),
        }
    }

    /// Counts a failed token check (an unknown or expired token) against
    /// the address.
    pub fn note_auth_failure(&self, ip: Option<IpAddr>) {
        let (rate, burst) = (self.limits.per_ip_per_second, self.limits.per_ip_burst);
        let Some(ip) = ip.filter(|_| rate > 0.0) else {
            return;
        };
        let now = Instant::now();
        let mut failures = self.auth_failures.lock();
        if failures.len() > 10_000 {
            failures.retain(|_, b| b.refilled(now, rate, burst) < burst);
        }
        // Over the limit is what the next check refuses; nothing to say here.
        let _ = failures
            .entry(ip)
            .or_insert_with(|| Bucket::full(burst, now))
            .take(now, rate, burst);
        self.failing_addresses
            .store(failures.len(), Ordering::Relaxed);
    }

    /// Takes one token for the user `key`.
    pub fn check_user(&self, key: &str) -> Result<()> {
        self.take(
            key,
            self.limits.per_user_per_second,
            self.limits.per_user_burst,
        )
    }

    /// Takes one token for the client address `key`.
    pub fn check_ip(&self, key: &str) -> Result<()> {
        self.take(key, self.limits.per_ip_per_second, self.limits.per_ip_burst)
    }

    fn take(&self, key: &str, rate: f64, burst: f64) -> Result<()> {
        if rate <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        if buckets.len() > 100_000 {
            // Full buckets carry no information; drop them to bound memory.
            buckets.retain(|_, b| b.refilled(now, rate, burst) < burst);
        }
        buckets
            .entry(key.to_owned())
            .or_insert_with(|| Bucket::full(burst, now))
            .take(now, rate, burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_second: f64, burst: f64) -> RateLimiter {
        RateLimiter::new(RateLimits {
            per_user_per_second: per_second,
            per_user_burst: burst,
            per_ip_per_second: per_second,
            per_ip_burst: burst,
        })
    }

    #[test]
    fn a_user_past_the_burst_is_refused_with_a_retry_time() {
        let l = limiter(0.5, 3.0);
        for _ in 0..3 {
            l.check_user("@a:x").unwrap();
        }
        match l.check_user("@a:x") {
            Err(Error::LimitExceeded { retry_after_ms }) => {
                assert!((1..=2000).contains(&retry_after_ms), "{retry_after_ms}")
            }
            other => panic!("expected LimitExceeded, got {other:?}"),
        }
        // Another user has a bucket of their own.
        l.check_user("@b:x").unwrap();
    }

    #[test]
    fn failed_token_checks_lock_out_the_address_and_only_it() {
        let l = limiter(0.01, 2.0);
        let probe: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        l.check_auth_failures(Some(probe)).unwrap();
        l.note_auth_failure(Some(probe));
        l.check_auth_failures(Some(probe)).unwrap();
        l.note_auth_failure(Some(probe));
        assert!(matches!(
            l.check_auth_failures(Some(probe)),
            Err(Error::LimitExceeded { .. })
        ));
        l.check_auth_failures(Some(other)).unwrap();
        // Checking does not use up what is left: a fresh address keeps its
        // whole allowance however often it is checked.
        for _ in 0..10 {
            l.check_auth_failures(Some(other)).unwrap();
        }
    }
}
