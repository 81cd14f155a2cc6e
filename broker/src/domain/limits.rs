//! Owns the abuse-protection values the configuration sets and `ratelimit` applies: request
//! rates, the lockout policy, and the networks of trusted proxies.

use std::net::IpAddr;
use std::time::Duration;

use crate::clock::UnixTime;

/// At most `count` requests per `per`; bursts up to `count` are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl Rate {
    /// `"off"` (no limit) or `"N/duration"`, e.g. `"10/1m"`, `"1000/1s"`.
    pub fn parse(s: &str) -> Result<Option<Rate>, String> {
        let s = s.trim();
        if s == "off" {
            return Ok(None);
        }
        let (n, per) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` is not `off` or like `10/1m`"))?;
        let count: u32 = n
            .trim()
            .parse()
            .map_err(|_| format!("`{n}` is not a whole number"))?;
        let per = humantime::parse_duration(per.trim())
            .map_err(|e| format!("`{per}` is not a duration: {e}"))?;
        if count == 0 || per.is_zero() || per > Duration::from_secs(86_400) {
            return Err(format!(
                "`{s}` needs at least 1 request per a period of at most 24h"
            ));
        }
        Ok(Some(Rate { count, per }))
    }
}

/// The configured limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub login_per_ip: Option<Rate>,
    pub login_per_account: Option<Rate>,
    pub mfa_per_ip: Option<Rate>,
    pub mfa_per_account: Option<Rate>,
    pub token_per_client: Option<Rate>,
    pub callback_per_ip: Option<Rate>,
    /// Sign-in journeys started (each a stored login transaction) per client address.
    pub journey_per_ip: Option<Rate>,
    /// Second-factor challenges that send something (email, SMS, push) per user, whatever
    /// the plugin's own cooldown says.
    pub mfa_send_per_account: Option<Rate>,
    /// Polls of a waiting factor (its page refreshing while an approval is awaited) per user.
    pub mfa_poll_per_account: Option<Rate>,
    pub lockout: LockoutPolicy,
    pub trusted_proxies: Vec<Cidr>,
}

/// Brute-force lockout: after `after` failures within `window`, the account is locked for
/// `delay`, doubling with each further failure, at most `max_delay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// 0: never lock.
    pub after: u32,
    pub delay: Duration,
    pub max_delay: Duration,
    pub window: Duration,
}

impl LockoutPolicy {
    /// Until when an account with `failures` failures is locked (0: not locked).
    pub fn locked_until(&self, failures: i64, now: UnixTime) -> UnixTime {
        let after = i64::from(self.after);
        if self.after == 0 || failures < after {
            return 0;
        }
        let doublings = u32::try_from(failures - after).unwrap_or(u32::MAX).min(30);
        let delay = self
            .delay
            .as_secs()
            .saturating_mul(1u64 << doublings)
            .min(self.max_delay.as_secs());
        now.saturating_add(i64::try_from(delay).unwrap_or(i64::MAX))
    }
}

/// An IP network, e.g. `10.0.0.0/8`, `::1/128`; a bare address is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not an IP address or network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}` has a prefix length outside 0-{max}"))?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}
