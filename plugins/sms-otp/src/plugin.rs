//! Owns the WebAssembly side of the SMS factor: the `factor` export of plugins/wit/mfa.wit,
//! built on the host's config, clock, random, state and sms capabilities.
//!
//! State keys (this user only): `phone` is the enrolled number (E.164); during enrolment
//! `pending_phone` is the number being proved and `enroll_challenge` the code sent to it; at
//! sign-in `challenge` is the code sent to `phone`. The two codes are kept apart so that an
//! enrolment code never signs anyone in.

// The bindings wit-bindgen generates for imports and exports are `unsafe`; none is written here.
#![allow(unsafe_code)]

use alloc::string::String;
use alloc::vec;

use concierge_plugin_kit::answer::{field, normalize_code};
use concierge_plugin_kit::challenge::{Challenge, Outcome};
use concierge_plugin_kit::config::minutes;
use concierge_plugin_kit::locale::Lang;
use concierge_plugin_kit::otp;
use concierge_plugin_kit::phone::{mask, parse_e164};
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
use concierge::mfa::{clock, config, random, sms, state};
use exports::concierge::mfa::factor::Guest;

const PHONE: &str = "phone";
const PENDING_PHONE: &str = "pending_phone";
const ENROLL_CHALLENGE: &str = "enroll_challenge";
const CHALLENGE: &str = "challenge";
const PHONE_FIELD: &str = "phone";
const CODE_FIELD: &str = "code";
/// Digits of a code.
const DIGITS: u32 = 6;

struct SmsOtp;

export!(SmsOtp);

impl Guest for SmsOtp {
    fn describe() -> Description {
        Description {
            id: "sms-otp".into(),
            name: localized(texts::name()),
            kind: FactorKind::SmsOtp,
            needs_enrollment: true,
            amr: vec!["otp".into(), "sms".into()],
        }
    }

    fn is_enrolled(_user: User) -> bool {
        load_phone(PHONE).is_some()
    }

    fn enroll_begin(_user: User) -> Result<Form, PluginError> {
        state::delete(PENDING_PHONE);
        Ok(Form {
            intro: localized(texts::phone_intro()),
            fields: vec![Field {
                name: PHONE_FIELD.into(),
                kind: FieldKind::Phone,
                label: localized(texts::phone_label()),
                hint: Some(localized(texts::phone_hint())),
                max_length: 24,
            }],
            qr: None,
            secret: None,
        })
    }

    fn enroll_finish(user: User, answer: Answer) -> Result<EnrollStep, PluginError> {
        let settings = Settings::read(config::get).map_err(PluginError::Internal)?;
        if let Some(typed) = field(&answer, PHONE_FIELD) {
            // Step 1: a number; send a code to prove it.
            let phone = parse_e164(typed).ok_or_else(|| bad_input(texts::bad_phone()))?;
            let now = clock::now();
            let same_number = load_phone(PENDING_PHONE).as_deref() == Some(phone.as_str());
            if let Some(recent) = load_challenge(ENROLL_CHALLENGE)
                .filter(|sent| !sent.may_resend(now, settings.resend_seconds))
            {
                if !same_number {
                    let wait = recent.issued_at.saturating_add(settings.resend_seconds) - now;
                    return Err(bad_input(texts::wait_before_resend(wait.max(1))));
                }
            } else {
                state::set(PENDING_PHONE, phone.as_bytes()).map_err(PluginError::Unavailable)?;
                send_code(ENROLL_CHALLENGE, &phone, &user, &settings, now)?;
            }
            return Ok(EnrollStep::Next(code_form(&phone)));
        }
        // Step 2: the code sent to the pending number.
        let code = typed_code(&answer)?;
        let gone = || bad_input(texts::enrollment_gone());
        let phone = load_phone(PENDING_PHONE).ok_or_else(gone)?;
        let challenge = load_challenge(ENROLL_CHALLENGE).ok_or_else(gone)?;
        match check(ENROLL_CHALLENGE, challenge, &code, &settings)? {
            Outcome::Accepted => {
                state::set(PHONE, phone.as_bytes()).map_err(PluginError::Unavailable)?;
                state::delete(PENDING_PHONE);
                // A sign-in code sent to the previous number no longer counts.
                state::delete(CHALLENGE);
                Ok(EnrollStep::Done)
            }
            Outcome::Wrong => Err(bad_input(texts::wrong())),
            Outcome::Expired => {
                state::delete(PENDING_PHONE);
                Err(bad_input(texts::expired()))
            }
            Outcome::TooManyAttempts => {
                state::delete(PENDING_PHONE);
                Err(bad_input(texts::too_many_attempts()))
            }
        }
    }

    fn challenge_begin(user: User) -> Result<Form, PluginError> {
        let phone = load_phone(PHONE).ok_or(PluginError::NotEnrolled)?;
        let settings = Settings::read(config::get).map_err(PluginError::Internal)?;
        let now = clock::now();
        // A page reload within `resend_seconds` shows the form again without another message.
        if load_challenge(CHALLENGE)
            .is_none_or(|sent| sent.may_resend(now, settings.resend_seconds))
        {
            send_code(CHALLENGE, &phone, &user, &settings, now)?;
        }
        Ok(code_form(&phone))
    }

    fn verify(_user: User, answer: Answer) -> Result<Verdict, PluginError> {
        if load_phone(PHONE).is_none() {
            return Err(PluginError::NotEnrolled);
        }
        let settings = Settings::read(config::get).map_err(PluginError::Internal)?;
        let code = typed_code(&answer)?;
        let Some(challenge) = load_challenge(CHALLENGE) else {
            return Ok(Verdict::Rejected(localized(texts::no_code())));
        };
        Ok(match check(CHALLENGE, challenge, &code, &settings)? {
            Outcome::Accepted => Verdict::Accepted,
            Outcome::Wrong => Verdict::Rejected(localized(texts::wrong())),
            Outcome::Expired => Verdict::Rejected(localized(texts::expired())),
            Outcome::TooManyAttempts => Verdict::Rejected(localized(texts::too_many_attempts())),
        })
    }
}

/// Makes a code, keeps it under `key` and texts it to `phone`; keeps nothing if sending failed.
fn send_code(
    key: &str,
    phone: &str,
    user: &User,
    settings: &Settings,
    now: i64,
) -> Result<(), PluginError> {
    let code = otp::draw(random::bytes, DIGITS)
        .ok_or_else(|| PluginError::Internal("random: no usable bytes".into()))?;
    let challenge = Challenge::new(code, now, settings.ttl_seconds);
    state::set(key, &challenge.encode()).map_err(PluginError::Unavailable)?;
    let body = texts::message(
        Lang::of(&user.locale),
        &settings.issuer,
        &challenge.code,
        minutes(settings.ttl_seconds),
    );
    if let Err(error) = sms::send_sms(phone, &body) {
        // Nothing was sent: leave no code behind that would hold back the next one.
        state::delete(key);
        return Err(PluginError::Unavailable(error));
    }
    Ok(())
}

/// Checks a code against the challenge under `key` and keeps what is left of it.
fn check(
    key: &str,
    challenge: Challenge,
    code: &str,
    settings: &Settings,
) -> Result<Outcome, PluginError> {
    let (outcome, keep) = challenge.check(code, clock::now(), settings.max_attempts);
    match keep {
        Some(challenge) => {
            state::set(key, &challenge.encode()).map_err(PluginError::Unavailable)?
        }
        None => state::delete(key),
    }
    Ok(outcome)
}

fn load_phone(key: &str) -> Option<String> {
    state::get(key).and_then(|bytes| String::from_utf8(bytes).ok())
}

fn load_challenge(key: &str) -> Option<Challenge> {
    state::get(key).and_then(|bytes| Challenge::decode(&bytes))
}

fn typed_code(answer: &Answer) -> Result<String, PluginError> {
    field(answer, CODE_FIELD)
        .and_then(|typed| normalize_code(typed, DIGITS as usize))
        .ok_or_else(|| bad_input(texts::malformed()))
}

fn code_form(phone: &str) -> Form {
    Form {
        intro: localized(texts::sent_intro(&mask(phone))),
        fields: vec![Field {
            name: CODE_FIELD.into(),
            kind: FieldKind::Code,
            label: localized(texts::code_label()),
            hint: Some(localized(texts::code_hint())),
            max_length: DIGITS + 2,
        }],
        qr: None,
        secret: None,
    }
}

fn bad_input(text: Text) -> PluginError {
    PluginError::BadInput(localized(text))
}

fn localized((en, ko): Text) -> Localized {
    Localized { en, ko }
}
