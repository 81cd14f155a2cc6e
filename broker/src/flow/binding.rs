//! Owns the journey store as a browser sees it: a journey begins bound to the browser's binding cookie, is resumed only by that browser (its id alone opens nothing), is saved compare-and-swap, and once finished answers a second submit with the answer it kept.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use url::Url;

use crate::audit::{Event, EventKind};
use crate::flow::contract::{AppAnswer, Browser, CookieOp, Hop, Next, Outcome};
use crate::flow::journey::{JourneyError, JourneyId, Loaded};
use crate::flow::machine::{self, Journey};
use crate::flow::signin::{SignIn, SignInError, base64_url, blocking};
use crate::ratelimit::Scope;
use crate::session::SessionToken;

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub(crate) fn binding_hash(binding: &str) -> String {
    hex(&Sha256::digest(binding.as_bytes()))
}

/// A journey named by a request.
pub enum Resumed {
    /// Live, and this browser's.
    Live(JourneyId, Box<Loaded<Journey>>),
    /// Finished: the answer it gave this browser.
    Answered(Box<Outcome>),
    /// Unknown, expired, outdated or another browser's.
    Gone,
}

/// The outcome a kept answer stands for.
fn replay_answer(a: &machine::Answer) -> Option<Outcome> {
    let mut out = if a.to.starts_with('/') && a.params.is_empty() {
        Outcome::new(Next::Redirect(a.to.clone()))
    } else {
        let redirect_uri = Url::parse(&a.to).ok()?;
        let mut out = Outcome::new(Next::App(AppAnswer {
            redirect_uri: redirect_uri.clone(),
            form_post: a.form_post,
            params: a.params.clone(),
        }));
        out.hops.push(Hop::Url(redirect_uri));
        out
    };
    if let Some(s) = &a.session {
        out = out.with_cookie(CookieOp::Session(SessionToken::from_kept(s.clone())));
    }
    Some(out)
}

impl SignIn {
    /// A new journey for this browser (and the binding cookie to set if it has none).
    pub(crate) async fn begin(
        &self,
        browser: &Browser,
        mut journey: Journey,
    ) -> Result<(JourneyId, Loaded<Journey>, Option<String>), SignInError> {
        // Each journey is a stored row: counted per address before it is written.
        if let Err(limited) = self.limiter.check(Scope::JourneyPerIp, &browser.ip) {
            self.provider.audit.record(
                Event::new(EventKind::RateLimited)
                    .ip(browser.ip.as_str())
                    .reason(Scope::JourneyPerIp.as_str()),
            );
            return Err(SignInError::RateLimited(limited.retry_after_secs));
        }
        let (binding, new) = match &browser.binding {
            Some(b) if b.expose().len() == 43 => (b.expose().to_owned(), None),
            _ => {
                let b = base64_url(&self.entropy.bytes32());
                (b.clone(), Some(b))
            }
        };
        journey.binding = binding_hash(&binding);
        let j = journey.clone();
        let journeys = self.journeys.clone();
        let bound: [u8; 32] = Sha256::digest(binding.as_bytes()).into();
        let id = blocking(move || Ok(journeys.start_bound(&j, Some(bound))?)).await?;
        Ok((
            id,
            Loaded {
                state: journey,
                version: 1,
                expires_at: self.now(),
                created_at: self.now(),
            },
            new,
        ))
    }

    /// The live journey `raw` of this browser: its id must be well formed and known, and the
    /// browser must hold the binding cookie it was started with.
    /// The live journey `raw` of this browser; or, when that journey already finished, the
    /// answer it gave this browser (a double submit of its last step is answered the same).
    pub(crate) async fn resume(
        &self,
        browser: &Browser,
        raw: &str,
    ) -> Result<Resumed, SignInError> {
        let Some(id) = JourneyId::parse(raw) else {
            return Ok(Resumed::Gone);
        };
        let journeys = self.journeys.clone();
        let id2 = id.clone();
        let loaded = match blocking(move || Ok(journeys.load::<Journey>(&id2)?)).await {
            Ok(l) => l,
            Err(SignInError::Journey(JourneyError::Finished)) => {
                return Ok(match self.kept_answer(browser, &id).await? {
                    Some(out) => Resumed::Answered(Box::new(out)),
                    None => Resumed::Gone,
                });
            }
            // A journey written in another shape (an upgrade in between) restarts too.
            Err(SignInError::Journey(
                JourneyError::Unknown | JourneyError::Expired | JourneyError::Outdated,
            )) => return Ok(Resumed::Gone),
            Err(e) => return Err(e),
        };
        if !self.bound(browser, &loaded.state) {
            return Ok(Resumed::Gone);
        }
        Ok(Resumed::Live(id, Box::new(loaded)))
    }

    /// The answer finished journey `id` gave this browser, if it kept one.
    pub(crate) async fn kept_answer(
        &self,
        browser: &Browser,
        id: &JourneyId,
    ) -> Result<Option<Outcome>, SignInError> {
        let (journeys, id) = (self.journeys.clone(), id.clone());
        let done = blocking(move || Ok(journeys.finished::<Journey>(&id)?)).await?;
        let Some(j) = done.filter(|j| self.bound(browser, j)) else {
            return Ok(None);
        };
        Ok(j.answer.as_ref().and_then(replay_answer))
    }

    pub(crate) fn bound(&self, browser: &Browser, j: &Journey) -> bool {
        browser.binding.as_ref().is_some_and(|b| {
            binding_hash(b.expose())
                .as_bytes()
                .ct_eq(j.binding.as_bytes())
                .into()
        })
    }

    /// Writes the journey back if nobody else changed it since it was read.
    pub(crate) async fn save(
        &self,
        id: &JourneyId,
        loaded: &mut Loaded<Journey>,
    ) -> Result<(), SignInError> {
        let journeys = self.journeys.clone();
        let (id, copy) = (id.clone(), loaded.clone());
        let v = blocking(move || Ok(journeys.save(&id, &copy)?)).await?;
        loaded.version = v;
        Ok(())
    }
}
