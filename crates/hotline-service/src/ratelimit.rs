//! Token-bucket rate limits per user and per client address.

use std::collections::HashMap;
use std::time::Instant;

use parking_lot::Mutex;

use crate::config::RateLimits;
use crate::{Error, Result};

struct Bucket {
    tokens: f64,
    at: Instant,
}

pub struct RateLimiter {
    limits: RateLimits,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub fn new(limits: RateLimits) -> Self {
        Self {
            limits,
            buckets: Mutex::new(HashMap::new()),
        }
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
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let b = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - b.tokens) / rate * 1000.0).ceil() as u64;
            Err(Error::LimitExceeded {
                retry_after_ms: wait,
            })
        }
    }
}
