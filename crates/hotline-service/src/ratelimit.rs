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
//!
//! Several processes on one database share their limits: each process
//! collects what it charged (tokens taken, failures counted) and the
//! service broadcasts it every [`SHARE_EVERY`]; the others charge the same
//! keys ([`RateLimiter::charge_remote`]). So a user or an address gets one
//! allowance from the deployment, not one per process, give or take what
//! the processes let through in one interval before they heard of it. A
//! bucket charged elsewhere may go below empty (down to minus its burst):
//! the debt is real, and it is waited off.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use std::sync::atomic::AtomicBool;

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
    /// Takes `n` tokens another process took: never refuses, and goes no
    /// lower than one burst in debt.
    fn debit(&mut self, now: Instant, rate: f64, burst: f64, n: u32) {
        self.tokens = (self.refilled(now, rate, burst) - f64::from(n)).max(-burst);
        self.at = now;
    }

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
    /// Whether other processes share the limits (see the module docs).
    sharing: AtomicBool,
    /// What was charged since the last [`RateLimiter::take_charges`].
    charges: Mutex<Charges>,
}

/// How often a process tells the others what its limiter charged.
pub const SHARE_EVERY: Duration = Duration::from_millis(50);

/// Charges not yet told to the other processes: bucket charges summed per
/// key, login outcomes in their order (a success forgets the failures
/// before it, not after).
#[derive(Default)]
struct Charges {
    buckets: HashMap<String, u32>,
    logins: Vec<String>,
}

/// The kinds of charge, as the first character of a shared key.
const USER: char = 'u';
const ADDRESS: char = 'a';
const PROBE: char = 'p';
const AUTH_FAILURE: char = 'f';
const LOGIN_FAILURE: char = 'l';
const LOGIN_SUCCESS: char = 's';

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
            sharing: AtomicBool::new(false),
            charges: Mutex::new(Charges::default()),
        }
    }

    /// From now on, collects charges for the other processes.
    pub fn share(&self) {
        self.sharing.store(true, Ordering::Release);
    }

    fn note(&self, kind: char, key: &str) {
        if !self.sharing.load(Ordering::Relaxed) {
            return;
        }
        let mut charges = self.charges.lock();
        match kind {
            LOGIN_FAILURE | LOGIN_SUCCESS => {
                if charges.logins.len() < 100_000 {
                    charges.logins.push(format!("{kind}{key}"));
                }
            }
            _ => {
                let full = charges.buckets.len() >= 100_000;
                match charges.buckets.entry(format!("{kind}{key}")) {
                    std::collections::hash_map::Entry::Occupied(mut e) => {
                        *e.get_mut() = e.get().saturating_add(1)
                    }
                    std::collections::hash_map::Entry::Vacant(e) if !full => {
                        e.insert(1);
                    }
                    std::collections::hash_map::Entry::Vacant(_) => {}
                }
            }
        }
    }

    /// What was charged since the last call, for the other processes:
    /// shared keys with how many times.
    pub fn take_charges(&self) -> Vec<(String, u32)> {
        let charges = std::mem::take(&mut *self.charges.lock());
        let mut out: Vec<(String, u32)> = charges.buckets.into_iter().collect();
        out.extend(charges.logins.into_iter().map(|k| (k, 1)));
        out
    }

    /// Charges what another process charged (keys from its
    /// [`RateLimiter::take_charges`]).
    pub fn charge_remote(&self, charges: &[(String, u32)]) {
        let now = Instant::now();
        let l = &self.limits;
        for (key, n) in charges {
            let mut chars = key.chars();
            let Some(kind) = chars.next() else { continue };
            let key = chars.as_str();
            match kind {
                USER | ADDRESS => {
                    let (rate, burst) = match kind {
                        USER => (l.per_user_per_second, l.per_user_burst),
                        _ => (l.per_ip_per_second, l.per_ip_burst),
                    };
                    if rate > 0.0 {
                        self.buckets
                            .lock()
                            .entry(key.to_owned())
                            .or_insert_with(|| Bucket::full(burst, now))
                            .debit(now, rate, burst, *n);
                    }
                }
                PROBE => {
                    let (per_minute, burst) = if key.starts_with("u:") {
                        (
                            l.code_probes_per_user_per_minute,
                            l.code_probes_per_user_burst,
                        )
                    } else {
                        (l.code_probes_per_ip_per_minute, l.code_probes_per_ip_burst)
                    };
                    if per_minute > 0.0 {
                        self.probes
                            .lock()
                            .entry(key.to_owned())
                            .or_insert_with(|| Bucket::full(burst, now))
                            .debit(now, per_minute / 60.0, burst, *n);
                    }
                }
                AUTH_FAILURE => {
                    if let Ok(ip) = key.parse::<IpAddr>() {
                        for _ in 0..*n {
                            self.count_auth_failure(ip, now);
                        }
                    }
                }
                LOGIN_FAILURE => {
                    for _ in 0..*n {
                        self.count_login_failure(key, now);
                    }
                }
                LOGIN_SUCCESS => self.forget_login_failures(key),
                _ => {}
            }
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
            let taken = probes
                .entry(key.clone())
                .or_insert_with(|| Bucket::full(burst, now))
                .take(now, rate, burst);
            if taken.is_ok() {
                self.note(PROBE, &key);
            }
            taken
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
        self.note(LOGIN_FAILURE, account);
        self.count_login_failure(account, now)
    }

    fn count_login_failure(&self, account: &str, now: Instant) -> Option<LoginLock> {
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
        self.note(LOGIN_SUCCESS, account);
        self.forget_login_failures(account);
    }

    fn forget_login_failures(&self, account: &str) {
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
        let Some(ip) = ip.filter(|_| self.limits.per_ip_per_second > 0.0) else {
            return;
        };
        self.note(AUTH_FAILURE, &ip.to_string());
        self.count_auth_failure(ip, Instant::now());
    }

    fn count_auth_failure(&self, ip: IpAddr, now: Instant) {
        let (rate, burst) = (self.limits.per_ip_per_second, self.limits.per_ip_burst);
        if rate <= 0.0 {
            return;
        }
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
            USER,
            key,
            self.limits.per_user_per_second,
            self.limits.per_user_burst,
        )
    }

    /// Takes one token for the client address `key`.
    pub fn check_ip(&self, key: &str) -> Result<()> {
        self.take(
            ADDRESS,
            key,
            self.limits.per_ip_per_second,
            self.limits.per_ip_burst,
        )
    }

    fn take(&self, kind: char, key: &str, rate: f64, burst: f64) -> Result<()> {
        if rate <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        if buckets.len() > 100_000 {
            // Full buckets carry no information; drop them to bound memory.
            buckets.retain(|_, b| b.refilled(now, rate, burst) < burst);
        }
        let taken = buckets
            .entry(key.to_owned())
            .or_insert_with(|| Bucket::full(burst, now))
            .take(now, rate, burst);
        drop(buckets);
        if taken.is_ok() {
            self.note(kind, key);
        }
        taken
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

    /// Two processes' limiters, each told what the other charged.
    fn tell(from: &RateLimiter, to: &RateLimiter) {
        to.charge_remote(&from.take_charges());
    }

    #[test]
    fn processes_that_share_their_charges_give_a_user_one_allowance() {
        let (a, b) = (limiter(0.001, 4.0), limiter(0.001, 4.0));
        a.share();
        b.share();
        for _ in 0..3 {
            a.check_user("@u:x").unwrap();
        }
        tell(&a, &b);
        b.check_user("@u:x").unwrap();
        retry_after(b.check_user("@u:x"));
        // What b let through, a hears of: one burst between them.
        tell(&b, &a);
        retry_after(a.check_user("@u:x"));
        // Another user, and the same user unshared, are untouched.
        a.check_user("@v:x").unwrap();
        let unshared = limiter(0.001, 4.0);
        for _ in 0..4 {
            unshared.check_user("@u:x").unwrap();
        }
        assert!(unshared.take_charges().is_empty());
    }

    #[test]
    fn a_login_lock_earned_on_one_process_holds_on_the_other() {
        let (a, b) = (login_limiter(2, 10.0, 60.0), login_limiter(2, 10.0, 60.0));
        a.share();
        b.share();
        b.note_login_failure("@a:x");
        tell(&b, &a);
        a.note_login_failure("@a:x");
        // The third failure counted anywhere starts the lock.
        assert!(a.note_login_failure("@a:x").is_some());
        tell(&a, &b);
        retry_after(b.check_login("@a:x"));
        // A success on either forgets the failures on both.
        b.note_login_success("@a:x");
        tell(&b, &a);
        a.check_login("@a:x").unwrap();
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
