//! Owns the WebAssembly side of the email factor: the `factor` export of plugins/wit/mfa.wit,
//! built on the host's config, clock, random, state and email capabilities.
//!
//! State key (this user only): `challenge`, the code sent and not used yet.

// The bindings wit-bindgen generates for imports and exports are `unsafe`; none is written here.
#![allow(unsafe_code)]

use alloc::string::String;
use alloc::vec;

use concierge_plugin_kit::answer::{field, normalize_code};
use concierge_plugin_kit::challenge::{Challenge, Outcome};
use concierge_plugin_kit::config::minutes;
use concierge_plugin_kit::locale::Lang;
use concierge_plugin_kit::otp;
use concierge_plugin_kit::settings::Settings;

use crate::texts::{self, Text};

wit_bindgen::generate!({
    path: "../wit",
    world: "factor-plugin",
});

use concierge::mfa::types::{
    Answer, Description, EnrollStep, FactorKind, Field, FieldKind, Form, Localized, PluginError,
    User, Verdict,
};
use concierge::mfa::{clock, config, email, random, state};
use exports::concierge::mfa::factor::Guest;

const CHALLENGE: &str = "challenge";
const CODE_FIELD: &str = "code";
/// Digits of a code.
const DIGITS: u32 = 6;

struct EmailOtp;

export!(EmailOtp);

impl Guest for EmailOtp {
    fn describe() -> Description {
        Description {
            id: "email-otp".into(),
            name: localized(texts::name()),
            kind: FactorKind::EmailOtp,
            needs_enrollment: false,
            amr: vec!["otp".into()],
        }
    }

    fn is_enrolled(user: User) -> bool {
        !user.email.is_empty()
    }

    fn enroll_begin(_user: User) -> Result<Form, PluginError> {
        Err(PluginError::Internal("email-otp needs no enrolment".into()))
    }

    fn enroll_finish(_user: User, _answer: Answer) -> Result<EnrollStep, PluginError> {
        Err(PluginError::Internal("email-otp needs no enrolment".into()))
    }

    fn challenge_begin(user: User) -> Result<Form, PluginError> {
        if user.email.is_empty() {
            return Err(PluginError::NotEnrolled);
        }
        let settings = Settings::read(config::get).map_err(PluginError::Internal)?;
        let now = clock::now();
        let pending = state::get(CHALLENGE).and_then(|bytes| Challenge::decode(&bytes));
        // A page reload within `resend_seconds` shows the form again without another email.
        if pending.is_none_or(|pending| pending.may_resend(now, settings.resend_seconds)) {
            let challenge = Challenge::new(draw_code()?, now, settings.ttl_seconds);
            state::set(CHALLENGE, &challenge.encode()).map_err(PluginError::Unavailable)?;
            let (subject, body) = texts::message(
                Lang::of(&user.locale),
                &settings.issuer,
                &challenge.code,
                minutes(settings.ttl_seconds),
            );
            if let Err(error) = email::send_email(&subject, &body) {
                // Nothing was sent: leave no code behind that would hold back the next one.
                state::delete(CHALLENGE);
                return Err(PluginError::Unavailable(error));
            }
        }
        Ok(Form {
            intro: localized(texts::intro(&concierge_plugin_kit::email::mask(
                &user.email,
            ))),
            fields: vec![Field {
                name: CODE_FIELD.into(),
                kind: FieldKind::Code,
                label: localized(texts::code_label()),
                hint: Some(localized(texts::code_hint())),
                max_length: DIGITS + 2,
            }],
            qr: None,
            secret: None,
        })
    }

    fn verify(_user: User, answer: Answer) -> Result<Verdict, PluginError> {
        let settings = Settings::read(config::get).map_err(PluginError::Internal)?;
        let typed = field(&answer, CODE_FIELD)
            .and_then(|typed| normalize_code(typed, DIGITS as usize))
            .ok_or_else(|| PluginError::BadInput(localized(texts::malformed())))?;
        let Some(challenge) = state::get(CHALLENGE).and_then(|bytes| Challenge::decode(&bytes))
        else {
            return Ok(Verdict::Rejected(localized(texts::no_code())));
        };
        let (outcome, keep) = challenge.check(&typed, clock::now(), settings.max_attempts);
        match keep {
            Some(challenge) => {
                state::set(CHALLENGE, &challenge.encode()).map_err(PluginError::Unavailable)?;
            }
            None => state::delete(CHALLENGE),
        }
        Ok(match outcome {
            Outcome::Accepted => Verdict::Accepted,
            Outcome::Wrong => Verdict::Rejected(localized(texts::wrong())),
            Outcome::Expired => Verdict::Rejected(localized(texts::expired())),
            Outcome::TooManyAttempts => Verdict::Rejected(localized(texts::too_many_attempts())),
        })
    }
}

/// A fresh uniform code from the host's random source.
fn draw_code() -> Result<String, PluginError> {
    otp::draw(random::bytes, DIGITS)
        .ok_or_else(|| PluginError::Internal("random: no usable bytes".into()))
}

fn localized((en, ko): Text) -> Localized {
    Localized { en, ko }
}
