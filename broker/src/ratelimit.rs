//! Owns abuse protection: request rates per IP, per account and per client (GCRA, in memory,
//! per instance), brute-force lockout per account with a growing delay (in the database, so
//! every instance sees it), and which address a request comes from behind trusted proxies.
//! ADR 6 records why the two live in different places.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::clock::Clock;
use crate::domain::limits::{Cidr, Limits, LockoutPolicy, Rate};
use crate::storage::{StorageError, Store};

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    LoginPerIp,
    LoginPerAccount,
    MfaPerIp,
    MfaPerAccount,
    TokenPerClient,
    /// Answers from upstreams (OIDC callback, SAML ACS and Single Logout), per address.
    CallbackPerIp,
    /// Sign-in journeys started (`/authorize` without a session, `/login`), per address.
    JourneyPerIp,
    /// Second-factor challenges that send a message (or a push), per user.
    MfaSendPerAccount,
    /// Polls of a waiting second factor, per user.
    MfaPollPerAccount,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LoginPerIp => "login_per_ip",
            Self::LoginPerAccount => "login_per_account",
            Self::MfaPerIp => "mfa_per_ip",
            Self::MfaPerAccount => "mfa_per_account",
            Self::TokenPerClient => "token_per_client",
            Self::CallbackPerIp => "callback_per_ip",
            Self::JourneyPerIp => "journey_per_ip",
            Self::MfaSendPerAccount => "mfa_send_per_account",
            Self::MfaPollPerAccount => "mfa_poll_per_account",
        }
    }
}

/// The configured rate of `scope` (`None`: no limit).
fn rate_of(limits: &Limits, scope: Scope) -> Option<Rate> {
    match scope {
        Scope::LoginPerIp => limits.login_per_ip,
        Scope::LoginPerAccount => limits.login_per_account,
        Scope::MfaPerIp => limits.mfa_per_ip,
        Scope::MfaPerAccount => limits.mfa_per_account,
        Scope::TokenPerClient => limits.token_per_client,
        Scope::CallbackPerIp => limits.callback_per_ip,
        Scope::JourneyPerIp => limits.journey_per_ip,
        Scope::MfaSendPerAccount => limits.mfa_send_per_account,
        Scope::MfaPollPerAccount => limits.mfa_poll_per_account,
    }
}

/// A request refused by a limit: try again after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_after_secs: u64,
}

/// Above this many tracked keys, idle ones are forgotten.
const MAX_KEYS: usize = 100_000;

/// GCRA limiters: one "theoretical arrival time" (ms) per scope and key.
pub struct RateLimiter {
    limits: Limits,
    clock: Arc<dyn Clock>,
    tat: Mutex<HashMap<(Scope, String), i64>>,
}

impl RateLimiter {
    pub fn new(limits: Limits, clock: Arc<dyn Clock>) -> Self {
        Self {
            limits,
            clock,
            tat: Mutex::new(HashMap::new()),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn tat(&self) -> MutexGuard<'_, HashMap<(Scope, String), i64>> {
        match self.tat.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Counts one request of `key` against the `scope` limit.
    pub fn check(&self, scope: Scope, key: &str) -> Result<(), Limited> {
        let Some(rate) = rate_of(&self.limits, scope) else {
            return Ok(());
        };
        let now = self.clock.now_millis();
        let period = i64::try_from(rate.per.as_millis()).unwrap_or(i64::MAX);
        let interval = (period / i64::from(rate.count)).max(1);
        let tolerance = period - interval;
        let mut tat = self.tat();
        if tat.len() >= MAX_KEYS {
            tat.retain(|_, t| *t > now);
        }
        let slot = tat.entry((scope, key.to_owned())).or_insert(now);
        // No arrival time can get further ahead than one period: one that is means the clock
        // was set back (NTP, a test's manual clock), and the key starts over.
        if *slot > now.saturating_add(period) {
            *slot = now;
        }
        let current = (*slot).max(now);
        let wait = current - now - tolerance;
        if wait > 0 {
            return Err(Limited {
                retry_after_secs: u64::try_from((wait + 999) / 1000).unwrap_or(1).max(1),
            });
        }
        *slot = current + interval;
        Ok(())
    }
}

/// What [`Lockout::check`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LockCheck {
    pub locked: Option<Limited>,
    pub has_failures: bool,
}

/// The lockout of one kind of attempt (sign-in, MFA), over the shared store. Blocking.
pub struct Lockout {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    policy: LockoutPolicy,
    /// Prefix of the stored account key, e.g. `login:`.
    prefix: &'static str,
}

impl Lockout {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        policy: LockoutPolicy,
        prefix: &'static str,
    ) -> Self {
        Self {
            store,
            clock,
            policy,
            prefix,
        }
    }

    fn key(&self, account: &str) -> String {
        format!("{}{account}", self.prefix)
    }

    /// Whether the account is locked (and for how long), and whether it has failures on record
    /// (only then does a success need to write).
    pub fn check(&self, account: &str) -> Result<LockCheck, StorageError> {
        if self.policy.after == 0 {
            return Ok(LockCheck::default());
        }
        let now = self.clock.now();
        let state = self.store.login_lock(&self.key(account))?;
        Ok(LockCheck {
            locked: state.filter(|l| l.locked_until > now).map(|l| Limited {
                retry_after_secs: u64::try_from(l.locked_until - now).unwrap_or(1),
            }),
            has_failures: state.is_some(),
        })
    }

    /// Counts a failure; says how long the account is now locked, if it is.
    pub fn failed(&self, account: &str) -> Result<Option<Limited>, StorageError> {
        if self.policy.after == 0 {
            return Ok(None);
        }
        let now = self.clock.now();
        let window = i64::try_from(self.policy.window.as_secs()).unwrap_or(i64::MAX);
        let policy = self.policy;
        let state = self.store.record_login_failure(
            &self.key(account),
            now,
            now.saturating_sub(window),
            &|failures| policy.locked_until(failures, now),
        )?;
        Ok((state.locked_until > now).then(|| Limited {
            retry_after_secs: u64::try_from(state.locked_until - now).unwrap_or(1),
        }))
    }

    /// A success forgets the failures.
    pub fn succeeded(&self, account: &str) -> Result<(), StorageError> {
        if self.policy.after == 0 {
            return Ok(());
        }
        self.store.clear_login_failures(&self.key(account))
    }

    /// Forgets failures older than the window (locked accounts stay until their lock ends).
    pub fn sweep(&self) -> Result<u64, StorageError> {
        let window = i64::try_from(self.policy.window.as_secs()).unwrap_or(i64::MAX);
        self.store
            .delete_login_failures_before(self.clock.now().saturating_sub(window))
    }
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the nearest address
/// in `X-Forwarded-For` (read right to left) that is not a trusted proxy. Entries that do not
/// parse end the walk at the last trusted hop.
pub fn client_ip(peer: Option<IpAddr>, forwarded_for: &[&str], trusted: &[Cidr]) -> Option<IpAddr> {
    let peer = peer?;
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return Some(peer);
    }
    let mut nearest = peer;
    let hops = forwarded_for
        .iter()
        .flat_map(|h| h.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in hops.into_iter().rev() {
        let Ok(ip) = hop.parse::<IpAddr>() else {
            return Some(nearest);
        };
        if !is_trusted(ip) {
            return Some(ip);
        }
        nearest = ip;
    }
    Some(nearest)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::ManualClock;

    fn limits(rate: &str) -> Limits {
        Limits {
            login_per_ip: Rate::parse(rate).unwrap(),
            login_per_account: None,
            mfa_per_ip: None,
            mfa_per_account: None,
            token_per_client: None,
            callback_per_ip: None,
            journey_per_ip: None,
            mfa_send_per_account: None,
            mfa_poll_per_account: None,
            lockout: LockoutPolicy {
                after: 0,
                delay: Duration::from_secs(1),
                max_delay: Duration::from_secs(1),
                window: Duration::from_secs(1),
            },
            trusted_proxies: vec![],
        }
    }

    #[test]
    fn rates_parse_or_say_why_not() {
        assert_eq!(Rate::parse("off").unwrap(), None);
        assert_eq!(
            Rate::parse("10/1m").unwrap(),
            Some(Rate {
                count: 10,
                per: Duration::from_secs(60)
            })
        );
        for bad in ["", "10", "0/1m", "x/1m", "10/x", "10/0s", "1/2days"] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_burst_passes_then_the_rate_holds_then_time_refills() {
        let clock = Arc::new(ManualClock::new(1_000));
        let rl = RateLimiter::new(limits("3/1m"), clock.clone());
        for _ in 0..3 {
            rl.check(Scope::LoginPerIp, "a").unwrap();
        }
        let refused = rl.check(Scope::LoginPerIp, "a").unwrap_err();
        assert_eq!(refused.retry_after_secs, 20);
        // Other keys and scopes are not affected.
        rl.check(Scope::LoginPerIp, "b").unwrap();
        rl.check(Scope::LoginPerAccount, "a").unwrap();
        clock.advance(19);
        assert!(rl.check(Scope::LoginPerIp, "a").is_err());
        clock.advance(1);
        rl.check(Scope::LoginPerIp, "a").unwrap();
        assert!(rl.check(Scope::LoginPerIp, "a").is_err());
    }

    #[test]
    fn a_clock_set_back_does_not_block_a_key() {
        let clock = Arc::new(ManualClock::new(10_000));
        let rl = RateLimiter::new(limits("3/1m"), clock.clone());
        clock.advance(3600);
        rl.check(Scope::LoginPerIp, "a").unwrap();
        clock.set(10_000);
        rl.check(Scope::LoginPerIp, "a").unwrap();
        rl.check(Scope::LoginPerIp, "a").unwrap();
        rl.check(Scope::LoginPerIp, "a").unwrap();
        assert!(
            rl.check(Scope::LoginPerIp, "a").is_err(),
            "then the rate holds"
        );
    }

    #[test]
    fn lockout_delay_grows_and_is_capped() {
        let p = LockoutPolicy {
            after: 3,
            delay: Duration::from_secs(10),
            max_delay: Duration::from_secs(60),
            window: Duration::from_secs(600),
        };
        assert_eq!(p.locked_until(2, 100), 0);
        assert_eq!(p.locked_until(3, 100), 110);
        assert_eq!(p.locked_until(4, 100), 120);
        assert_eq!(p.locked_until(5, 100), 140);
        assert_eq!(p.locked_until(6, 100), 160);
        assert_eq!(p.locked_until(60, 100), 160);
        let never = LockoutPolicy { after: 0, ..p };
        assert_eq!(never.locked_until(100, 100), 0);
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = vec![
            Cidr::parse("10.0.0.0/8").unwrap(),
            Cidr::parse("::1").unwrap(),
        ];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // Untrusted peer: the header is ignored.
        assert_eq!(
            client_ip(Some(ip("192.0.2.1")), &["203.0.113.9"], &trusted),
            Some(ip("192.0.2.1"))
        );
        // Trusted peer: the nearest untrusted hop, skipping trusted proxies in the chain.
        assert_eq!(
            client_ip(
                Some(ip("10.1.1.1")),
                &["198.51.100.7, 203.0.113.9", "10.2.2.2"],
                &trusted
            ),
            Some(ip("203.0.113.9"))
        );
        // A forged leftmost entry does not matter; garbage stops the walk at the last proxy.
        assert_eq!(
            client_ip(Some(ip("::1")), &["garbage, 10.3.3.3"], &trusted),
            Some(ip("10.3.3.3"))
        );
        assert_eq!(
            client_ip(Some(ip("10.1.1.1")), &[], &trusted),
            Some(ip("10.1.1.1"))
        );
    }

    #[test]
    fn networks_match_by_prefix() {
        let n = Cidr::parse("192.168.0.0/16").unwrap();
        assert!(n.contains("192.168.44.1".parse().unwrap()));
        assert!(!n.contains("192.169.0.1".parse().unwrap()));
        assert!(n.contains("::ffff:192.168.1.1".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nope").is_err());
    }
}
