//! Owns waiting factors (contract 0.2 `waiting`, issue #18 item 3): a plugin that starts an
//! approval elsewhere (a push to a phone) and is polled until it is approved, denied or expired.
//! `wait_begin` runs where a challenge would start (only from a POST, within the per-user send
//! limit: [`Mfa::sends`] is true for such a plugin); what it returns is checked and kept in the
//! sealed journey ([`Wait`]); each [`Mfa::poll`] runs under the attempt limit (a denial counts,
//! waiting does not).

use super::error::{malformed, plugin_error, plugin_result};
use super::factor::Wait;
use super::host::PluginError;
use super::host::waiting::{Pending, PollState as Poll};
use super::values::{FactorUser, VerifyOutcome};
use super::{Mfa, MfaError, Outbox, checks::check_localized, lock_key};

/// What `wait-begin` may return (documented in the WIT).
const MAX_CORRELATION: usize = 512;
const POLL_EVERY: std::ops::RangeInclusive<u32> = 2..=30;
const EXPIRES_IN: std::ops::RangeInclusive<u32> = 10..=300;

/// Checks a plugin's `pending` against the contract.
pub fn check_pending(p: &Pending) -> Result<(), String> {
    check_localized(&p.intro)?;
    if let Some(n) = &p.number
        && !(1..=8).contains(&n.len())
    {
        return Err(format!(
            "number: {} characters, 1 to 8 digits allowed",
            n.len()
        ));
    }
    if p.number
        .as_deref()
        .is_some_and(|n| !n.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("number: only ASCII digits".into());
    }
    if p.correlation.len() > MAX_CORRELATION {
        return Err(format!("correlation: over {MAX_CORRELATION} bytes"));
    }
    if !POLL_EVERY.contains(&p.poll_every) {
        return Err(format!(
            "poll-every: {} is not 2 to 30 seconds",
            p.poll_every
        ));
    }
    if !EXPIRES_IN.contains(&p.expires_in) {
        return Err(format!(
            "expires-in: {} is not 10 to 300 seconds",
            p.expires_in
        ));
    }
    Ok(())
}

impl Mfa {
    /// Whether `plugin` is a waiting factor (it exports `waiting`).
    pub fn waits(&self, plugin: &str) -> bool {
        self.loaded(plugin).is_ok_and(|l| l.waiting.is_some())
    }

    /// Starts a wait (the plugin sends its approval request): what to keep, and what to deliver
    /// before it counts as started. Blocking.
    pub fn wait_begin(&self, plugin: &str, user: &FactorUser) -> Result<(Wait, Outbox), MfaError> {
        let l = self.loaded(plugin)?;
        let (r, outbox) = self.call_waiting(&l, user, |p, s, u| {
            p.concierge_mfa0_2_0_waiting().call_wait_begin(s, u)
        })?;
        let pending = plugin_result(plugin, r)?;
        check_pending(&pending).map_err(|reason| malformed(plugin, reason))?;
        Ok((
            Wait {
                intro: pending.intro,
                number: pending.number,
                correlation: pending.correlation,
                poll_every: pending.poll_every,
                expires_at: self.clock.now() + i64::from(pending.expires_in),
            },
            outbox,
        ))
    }

    /// What the plugin says of a wait now, changing nothing here (the waiting page's GET): no
    /// attempt counted, no use recorded; `None` once it expired (no call). Blocking.
    pub fn peek(
        &self,
        plugin: &str,
        user: &FactorUser,
        wait: &Wait,
    ) -> Result<Option<Poll>, MfaError> {
        if self.clock.now() >= wait.expires_at {
            return Ok(None);
        }
        let (_, r) = self.ask(plugin, user, wait)?;
        let state = plugin_result(plugin, r)?;
        if let Poll::Rejected(msg) = &state {
            check_localized(msg).map_err(|reason| malformed(plugin, reason))?;
        }
        Ok(Some(state))
    }

    /// One `poll` call (its state written at once: nothing is sent).
    fn ask(
        &self,
        plugin: &str,
        user: &FactorUser,
        wait: &Wait,
    ) -> Result<
        (
            std::sync::Arc<super::registry::Loaded>,
            Result<Poll, PluginError>,
        ),
        MfaError,
    > {
        let l = self.loaded(plugin)?;
        let (r, outbox) = self.call_waiting(&l, user, |p, s, u| {
            p.concierge_mfa0_2_0_waiting()
                .call_poll(s, u, &wait.correlation)
        })?;
        self.settle(outbox)?;
        Ok((l, r))
    }

    /// Asks the plugin about a wait, within the attempt limit (the POST that goes on): still
    /// waiting, approved (the methods proven, the use recorded), denied (counts as a wrong
    /// answer), or expired (no call). Blocking.
    pub fn poll(
        &self,
        plugin: &str,
        user: &FactorUser,
        wait: &Wait,
    ) -> Result<VerifyOutcome, MfaError> {
        if self.clock.now() >= wait.expires_at {
            return Ok(VerifyOutcome::Expired);
        }
        let key = lock_key(plugin, user);
        let lock = self.lockout.check(&key)?;
        if let Some(l) = lock.locked {
            return Ok(VerifyOutcome::Locked(l));
        }
        let outcome = self.ask(plugin, user, wait);
        let rejected = |message| -> Result<VerifyOutcome, MfaError> {
            match self.lockout.failed(&key)? {
                Some(l) => Ok(VerifyOutcome::Locked(l)),
                None => Ok(VerifyOutcome::Rejected { message }),
            }
        };
        match outcome {
            Ok((_, Ok(Poll::Waiting))) => Ok(VerifyOutcome::Pending),
            Ok((l, Ok(Poll::Accepted))) => {
                if lock.has_failures {
                    self.lockout.succeeded(&key)?;
                }
                self.record_use(&user.id, plugin);
                Ok(VerifyOutcome::Accepted {
                    amr: l.proven_amr(),
                })
            }
            Ok((_, Ok(Poll::Rejected(msg)))) => rejected(check_localized(&msg).ok().map(|()| msg)),
            Ok((_, Err(e))) => {
                let _ = rejected(None)?;
                Err(plugin_error(plugin, e))
            }
            Err(e) => {
                let _ = rejected(None)?;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mfa::host::Localized;

    fn pending() -> Pending {
        Pending {
            intro: Localized {
                en: "Approve it".into(),
                ko: "승인하세요".into(),
            },
            number: Some("42".into()),
            correlation: "tx-1".into(),
            poll_every: 2,
            expires_in: 60,
        }
    }

    #[test]
    fn a_pending_wait_is_checked_against_the_contract() {
        assert!(check_pending(&pending()).is_ok());
        let bad = |f: fn(&mut Pending)| {
            let mut p = pending();
            f(&mut p);
            check_pending(&p).unwrap_err()
        };
        assert!(bad(|p| p.number = Some(String::new())).contains("number"));
        assert!(bad(|p| p.number = Some("123456789".into())).contains("number"));
        assert!(bad(|p| p.number = Some("4a".into())).contains("digits"));
        assert!(bad(|p| p.correlation = "x".repeat(513)).contains("correlation"));
        assert!(bad(|p| p.poll_every = 1).contains("poll-every"));
        assert!(bad(|p| p.poll_every = 31).contains("poll-every"));
        assert!(bad(|p| p.expires_in = 9).contains("expires-in"));
        assert!(bad(|p| p.expires_in = 301).contains("expires-in"));
        assert!(bad(|p| p.intro.en = "x".repeat(5000)).contains("2048"));
    }
}
