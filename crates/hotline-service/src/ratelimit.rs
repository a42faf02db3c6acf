//! Token-bucket rate limits per user and per client address, a bucket of
//! failed token checks per address, so access tokens cannot be guessed at
//! speed, and a failed-login backoff per account, so passwords cannot be
//! either.
//!
//! Failed logins, per account (the user id the attempt names, whether or
//! not it exists, so the backoff tells nothing about who has an account):
//! the first `login_failures_allowed` (5) failures cost nothing more than
//! the per-address limit. The next one locks the account's password for
//! `login_backoff_seconds` (10 s), and each failure after a lock has run
//! out doubles the wait (10, 20, 40 s ... ), capped at
//! `login_backoff_max_seconds` (15 min): an attacker gets about a hundred
//! guesses a day at the cap, and the real user is never locked out for
//! longer than the cap. While locked, an attempt is refused with
//! `M_LIMIT_EXCEEDED` and the time left, before the password is looked at:
//! no argon2 work, and no answer that tells a right password from a wrong
//! one. Attempts refused while locked do not extend the lock, so a flood
//! cannot keep the user out; a correct password after the lock clears the
//! count, and so do 24 hours without a failure.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

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
    /// Failed password checks per account (user id).
    login_failures: Mutex<HashMap<String, LoginFailures>>,
    /// Code probes (line invite previews), per user and per address, apart
    /// from the request buckets: a probe costs far more of its allowance.
    probes: Mutex<HashMap<String, Bucket>>,
}

/// An account's recent failed password checks.
struct LoginFailures {
    count: u32,
    last_failure: Instant,
    /// Passwords for the account are refused unchecked until then.
    locked_until: Option<Instant>,
}

/// A failure count older than this starts over.
const LOGIN_FAILURES_FORGOTTEN: Duration = Duration::from_secs(24 * 3600);

/// A lock a failed login started: how long it lasts, and which failure it was.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoginLock {
    pub wait: Duration,
    pub failures: u32,
}

impl RateLimiter {
    pub fn new(limits: RateLimits) -> Self {
        Self {
            limits,
            buckets: Mutex::new(HashMap::new()),
            auth_failures: Mutex::new(HashMap::new()),
            failing_addresses: AtomicUsize::new(0),
            login_failures: Mutex::new(HashMap::new()),
            probes: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one code probe (a look at a line invite by its code) for the
    /// user and one for the client address: codes are random, but a
    /// preview answers whether one exists, so guessing is held to a few a
    /// minute per user and per address, whichever is used up first.
    pub fn check_code_probe(&self, user: &str, ip: Option<IpAddr>) -> Result<()> {
        let l = &self.limits;
        let now = Instant::now();
        let mut probes = self.probes.lock();
        if probes.len() > 100_000 {
            probes.clear();
        }
        let mut take = |key: String, per_minute: f64, burst: f64| {
            if per_minute <= 0.0 {
                return Ok(());
            }
            let rate = per_minute / 60.0;
            probes
                .entry(key)
                .or_insert_with(|| Bucket::full(burst, now))
                .take(now, rate, burst)
        };
        take(
            format!("u:{user}"),
            l.code_probes_per_user_per_minute,
            l.code_probes_per_user_burst,
        )?;
        if let Some(ip) = ip {
            take(
                format!("a:{ip}"),
                l.code_probes_per_ip_per_minute,
                l.code_probes_per_ip_burst,
            )?;
        }
        Ok(())
    }

    /// Refuses a password attempt for `account` while its backoff runs,
    /// with the time left.
    pub fn check_login(&self, account: &str) -> Result<()> {
        self.check_login_at(account, Instant::now())
    }

    fn check_login_at(&self, account: &str, now: Instant) -> Result<()> {
        let failures = self.login_failures.lock();
        match failures.get(account).and_then(|f| f.locked_until) {
            Some(until) if until > now => Err(Error::LimitExceeded {
                retry_after_ms: (until - now).as_millis().max(1) as u64,
            }),
            _ => Ok(()),
        }
    }

    /// Counts a wrong password for `account`; returns the lock this failure
    /// starts, if it starts one.
    pub fn note_login_failure(&self, account: &str) -> Option<LoginLock> {
        self.note_login_failure_at(account, Instant::now())
    }

    fn note_login_failure_at(&self, account: &str, now: Instant) -> Option<LoginLock> {
        let allowed = self.limits.login_failures_allowed;
        let base = self.limits.login_backoff_seconds;
        if base <= 0.0 {
            return None;
        }
        let cap = self.limits.login_backoff_max_seconds.max(base);
        let mut failures = self.login_failures.lock();
        if failures.len() > 100_000 {
            // Bounded memory: keep the locked and the recent.
            failures.retain(|_, f| {
                f.locked_until.is_some_and(|u| u > now)
                    || now.duration_since(f.last_failure) < Duration::from_secs(3600)
            });
        }
        let f = failures
            .entry(account.to_owned())
            .or_insert_with(|| LoginFailures {
                count: 0,
                last_failure: now,
                locked_until: None,
            });
        if now.duration_since(f.last_failure) >= LOGIN_FAILURES_FORGOTTEN {
            f.count = 0;
            f.locked_until = None;
        }
        f.count += 1;
        f.last_failure = now;
        if f.count <= allowed {
            return None;
        }
        // Doubling per failure past the allowance; the exponent is bounded
        // before the power so it cannot overflow.
        let doublings = (f.count - allowed - 1).min(32);
        let wait = Duration::from_secs_f64((base * 2f64.powi(doublings as i32)).min(cap));
        f.locked_until = Some(now + wait);
        Some(LoginLock {
            wait,
            failures: f.count,
        })
    }

    /// A correct password for `account`: its failures are forgotten.
    pub fn note_login_success(&self, account: &str) {
        let mut failures = self.login_failures.lock();
        if !failures.is_empty() {
            failures.remove(account);
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
            ..RateLimits::default()
        })
    }

    fn login_limiter(allowed: u32, base: f64, cap: f64) -> RateLimiter {
        RateLimiter::new(RateLimits {
            login_failures_allowed: allowed,
            login_backoff_seconds: base,
            login_backoff_max_seconds: cap,
            ..RateLimits::default()
        })
    }

    fn retry_after(r: Result<()>) -> u64 {
        match r {
            Err(Error::LimitExceeded { retry_after_ms }) => retry_after_ms,
            other => panic!("expected LimitExceeded, got {other:?}"),
        }
    }

    #[test]
    fn an_account_past_its_allowed_failures_waits_doubling_up_to_the_cap() {
        let l = login_limiter(3, 10.0, 60.0);
        let t0 = Instant::now();
        let mut now = t0;
        for _ in 0..3 {
            l.check_login_at("@a:x", now).unwrap();
            assert_eq!(l.note_login_failure_at("@a:x", now), None);
        }
        let mut waits = vec![];
        for _ in 0..5 {
            l.check_login_at("@a:x", now).unwrap();
            let lock = l.note_login_failure_at("@a:x", now).expect("locked");
            waits.push(lock.wait.as_secs());
            let left = retry_after(l.check_login_at("@a:x", now + Duration::from_secs(1)));
            assert_eq!(left, lock.wait.as_millis() as u64 - 1000);
            // Refused attempts do not move the lock.
            now += lock.wait;
        }
        assert_eq!(waits, [10, 20, 40, 60, 60]);
        // Another account is untouched.
        l.check_login_at("@b:x", now - Duration::from_secs(1))
            .unwrap();
        // Success clears the count: the next failures are free again.
        l.note_login_success("@a:x");
        for _ in 0..3 {
            assert_eq!(l.note_login_failure_at("@a:x", now), None);
        }
    }

    #[test]
    fn code_probes_are_limited_per_user_and_per_address() {
        let l = RateLimiter::new(RateLimits {
            code_probes_per_user_per_minute: 1.0,
            code_probes_per_user_burst: 2.0,
            code_probes_per_ip_per_minute: 1.0,
            code_probes_per_ip_burst: 3.0,
            ..RateLimits::default()
        });
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        l.check_code_probe("@a:x", Some(ip)).unwrap();
        l.check_code_probe("@a:x", Some(ip)).unwrap();
        // The user's burst is used up; about a minute until the next.
        let wait = retry_after(l.check_code_probe("@a:x", Some(ip)));
        assert!((1..=60_000).contains(&wait), "{wait}");
        // Another user at the same address has one probe of the address's left.
        l.check_code_probe("@b:x", Some(ip)).unwrap();
        retry_after(l.check_code_probe("@c:x", Some(ip)));
        // Elsewhere, the same users are limited only by their own bucket.
        l.check_code_probe("@b:x", Some("10.0.0.2".parse().unwrap()))
            .unwrap();
    }

    #[test]
    fn failures_a_day_old_are_forgotten() {
        let l = login_limiter(2, 10.0, 900.0);
        let t0 = Instant::now();
        l.note_login_failure_at("@a:x", t0);
        l.note_login_failure_at("@a:x", t0);
        let later = t0 + LOGIN_FAILURES_FORGOTTEN;
        assert_eq!(l.note_login_failure_at("@a:x", later), None);
        l.check_login_at("@a:x", later).unwrap();
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
