//! Owns the WebAssembly side of the TOTP factor: the `factor` export of plugins/wit/mfa.wit,
//! built on the host's config, clock, random, state and log capabilities.
//!
//! State keys (this user only): `active` is the enrolled record, `pending` the one being set up.

// The bindings wit-bindgen generates for imports and exports are `unsafe`; none is written here.
#![allow(unsafe_code)]

use alloc::string::{String, ToString};
use alloc::vec;

use concierge_plugin_kit::answer::{field, normalize_code};

use crate::record::{Check, PERIOD, Record, SECRET_LEN};
use crate::settings::Settings;
use crate::texts::{self, Text};
use crate::uri::{MAX_QR_BYTES, otpauth};

wit_bindgen::generate!({
    path: "../wit",
    world: "factor-plugin",
});

use concierge::mfa::log::Level;
use concierge::mfa::types::{
    Answer, Description, EnrollStep, FactorKind, Field, FieldKind, Form, Localized, PluginError,
    User, Verdict,
};
use concierge::mfa::{clock, config, log, random, state};
use exports::concierge::mfa::factor::Guest;

const ACTIVE: &str = "active";
const PENDING: &str = "pending";
const CODE_FIELD: &str = "code";

struct Totp;

export!(Totp);

impl Guest for Totp {
    fn describe() -> Description {
        Description {
            id: "totp".into(),
            name: localized(texts::name()),
            kind: FactorKind::Totp,
            needs_enrollment: true,
            amr: vec!["otp".into()],
        }
    }

    fn is_enrolled(_user: User) -> bool {
        load(ACTIVE).is_some()
    }

    fn enroll_begin(user: User) -> Result<Form, PluginError> {
        let settings = Settings::parse(
            config::get("algorithm").as_deref(),
            config::get("digits").as_deref(),
            config::get("issuer").as_deref(),
        )
        .map_err(PluginError::Internal)?;
        let secret = random::bytes(SECRET_LEN as u32);
        if secret.len() != SECRET_LEN {
            return Err(PluginError::Internal("random: short read".into()));
        }
        let record = Record::new(settings.algorithm, settings.digits, secret)
            .map_err(PluginError::Internal)?;
        state::set(PENDING, &record.encode()).map_err(PluginError::Unavailable)?;
        let secret = record.secret_base32();
        let uri = |account: &str| {
            otpauth(
                &settings.issuer,
                account,
                &secret,
                settings.algorithm.as_str(),
                record.digits,
                PERIOD,
            )
        };
        // The account shown in the app is the email; an absurdly long one gives way to the id.
        let mut qr = uri(&user.email);
        if user.email.is_empty() || qr.len() > MAX_QR_BYTES {
            qr = uri(&user.id);
        }
        if qr.len() > MAX_QR_BYTES {
            return Err(PluginError::Internal(
                "the otpauth URI is too long for a QR code".into(),
            ));
        }
        Ok(Form {
            intro: localized(texts::enroll_intro(record.digits)),
            fields: vec![code_field(record.digits)],
            qr: Some(qr),
            secret: Some(secret),
        })
    }

    fn enroll_finish(_user: User, answer: Answer) -> Result<EnrollStep, PluginError> {
        let mut pending = load(PENDING).ok_or_else(|| bad_input(texts::no_pending_enrollment()))?;
        let code = typed_code(&answer, pending.digits)?;
        match pending
            .check(&code, clock::now())
            .map_err(PluginError::Internal)?
        {
            Check::Accepted { step } => {
                // The enrolment code is used: it cannot sign in a second time.
                pending.last_step = step;
                state::set(ACTIVE, &pending.encode()).map_err(PluginError::Unavailable)?;
                state::delete(PENDING);
                log::log(Level::Info, "enrolled");
                Ok(EnrollStep::Done)
            }
            Check::Wrong | Check::Replayed => Err(bad_input(texts::wrong())),
        }
    }

    fn challenge_begin(_user: User) -> Result<Form, PluginError> {
        let active = load(ACTIVE).ok_or(PluginError::NotEnrolled)?;
        Ok(Form {
            intro: localized(texts::challenge_intro()),
            fields: vec![code_field(active.digits)],
            qr: None,
            secret: None,
        })
    }

    fn verify(_user: User, answer: Answer) -> Result<Verdict, PluginError> {
        let mut active = load(ACTIVE).ok_or(PluginError::NotEnrolled)?;
        let code = typed_code(&answer, active.digits)?;
        match active
            .check(&code, clock::now())
            .map_err(PluginError::Internal)?
        {
            Check::Accepted { step } => {
                active.last_step = step;
                state::set(ACTIVE, &active.encode()).map_err(PluginError::Unavailable)?;
                Ok(Verdict::Accepted)
            }
            Check::Wrong => Ok(Verdict::Rejected(localized(texts::wrong()))),
            Check::Replayed => {
                log::log(
                    Level::Warn,
                    "refused a code whose time step was already used",
                );
                Ok(Verdict::Rejected(localized(texts::replayed())))
            }
        }
    }
}

/// The record under `key`, if there is a usable one.
fn load(key: &str) -> Option<Record> {
    state::get(key).and_then(|bytes| Record::decode(&bytes))
}

/// The code the user typed, normalised, or a message saying what is wrong with it.
fn typed_code(answer: &Answer, digits: u8) -> Result<String, PluginError> {
    field(answer, CODE_FIELD)
        .and_then(|typed| normalize_code(typed, usize::from(digits)))
        .ok_or_else(|| bad_input(texts::malformed(digits)))
}

fn code_field(digits: u8) -> Field {
    Field {
        name: CODE_FIELD.to_string(),
        kind: FieldKind::Code,
        label: localized(texts::code_label()),
        hint: Some(localized(texts::code_hint(digits))),
        max_length: u32::from(digits) + 2,
    }
}

fn bad_input(text: Text) -> PluginError {
    PluginError::BadInput(localized(text))
}

fn localized((en, ko): Text) -> Localized {
    Localized { en, ko }
}
