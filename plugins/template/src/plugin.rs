//! Owns the WebAssembly side of the template factor: the six `factor` functions of
//! plugins/wit/mfa.wit, on top of the host's config, random and state capabilities.

// The bindings wit-bindgen generates for imports and exports are `unsafe`; none is written here.
#![allow(unsafe_code)]

use alloc::string::String;
use alloc::vec;

use crate::pin::{SALT_LEN, StoredPin, is_valid};

// STEP 3: generate the bindings from the contract. `path` is the folder holding mfa.wit (adjust
// it if you copied this crate elsewhere); the world is always `factor-plugin`.
wit_bindgen::generate!({
    path: "../wit",
    world: "factor-plugin",
});

use concierge::mfa::types::{
    Answer, Description, EnrollStep, FactorKind, Field, FieldKind, Form, Localized, PluginError,
    User, Verdict,
};
// STEP 4: import only the capabilities you call. The build keeps an import only if the code
// calls it, the operator must grant each one in the manifest (`grants = ["random", "state"]`;
// `config` is always linked), and a plugin importing an ungranted capability does not load.
use concierge::mfa::{config, random, state};
use exports::concierge::mfa::factor::Guest;

/// State key of the stored PIN. State is per plugin and per user: the host gives each call
/// only the state of the user it is about.
const PIN: &str = "pin";
/// The form field; it comes back as `("pin", value)` in the answer.
const PIN_FIELD: &str = "pin";

struct Template;

// STEP 5: export your type as the `factor` implementation.
export!(Template);

impl Guest for Template {
    // STEP 6: who you are. `id` must equal the manifest's `id` ([a-z0-9-]{1,32}). Called once at
    // load, before any user, with no capability: return constants.
    fn describe() -> Description {
        Description {
            id: "template".into(),
            name: text("Personal PIN", "개인 PIN"),
            kind: FactorKind::Other,
            needs_enrollment: true,
            // RFC 8176 values; a PIN is something you know: "pin".
            amr: vec!["pin".into()],
        }
    }

    // STEP 7: whether this user can be challenged. Cheap: one state read.
    fn is_enrolled(_user: User) -> bool {
        state::get(PIN).is_some_and(|bytes| StoredPin::decode(&bytes).is_some())
    }

    // STEP 8: the first enrolment page. The host renders the form (never HTML from a plugin) in
    // the user's language and sends the answer to `enroll_finish`.
    fn enroll_begin(_user: User) -> Result<Form, PluginError> {
        let min = min_length()?;
        Ok(Form {
            intro: Localized {
                en: alloc::format!(
                    "Choose a PIN of {min} to 12 digits. You will type it when you sign in."
                ),
                ko: alloc::format!("{min}~12자리 숫자로 PIN을 정하세요. 로그인할 때 입력합니다."),
            },
            fields: vec![pin_field()],
            qr: None,
            secret: None,
        })
    }

    // STEP 9: handle the enrolment answer. Malformed input is `BadInput` (shown to the user);
    // a failing capability is `Unavailable`; `Done` ends enrolment, `Next(form)` asks again.
    fn enroll_finish(_user: User, answer: Answer) -> Result<EnrollStep, PluginError> {
        let typed = pin_in(&answer);
        if !is_valid(typed, min_length()?) {
            return Err(PluginError::BadInput(text(
                "A PIN is digits only, of the length shown.",
                "PIN은 안내된 길이의 숫자로만 정하세요.",
            )));
        }
        let salt: [u8; SALT_LEN] = random::bytes(SALT_LEN as u32)
            .try_into()
            .map_err(|_| PluginError::Internal("random: short read".into()))?;
        let stored = StoredPin::new(typed, salt);
        state::set(PIN, &stored.encode()).map_err(PluginError::Unavailable)?;
        Ok(EnrollStep::Done)
    }

    // STEP 10: start a challenge: send what must be sent (an email, an SMS) and return the page.
    fn challenge_begin(user: User) -> Result<Form, PluginError> {
        if !Self::is_enrolled(user) {
            return Err(PluginError::NotEnrolled);
        }
        Ok(Form {
            intro: text("Enter your PIN.", "PIN을 입력하세요."),
            fields: vec![pin_field()],
            qr: None,
            secret: None,
        })
    }

    // STEP 11: the verdict. `Accepted` only when the answer proves the factor; a wrong answer is
    // `Rejected` with a message. Anything unexpected is an error, and every error, trap, timeout
    // or exhausted budget fails the factor: the host never treats a failure as a pass.
    fn verify(_user: User, answer: Answer) -> Result<Verdict, PluginError> {
        let stored = state::get(PIN)
            .and_then(|bytes| StoredPin::decode(&bytes))
            .ok_or(PluginError::NotEnrolled)?;
        if stored.matches(pin_in(&answer)) {
            Ok(Verdict::Accepted)
        } else {
            Ok(Verdict::Rejected(text(
                "That PIN is not correct.",
                "PIN이 올바르지 않습니다.",
            )))
        }
    }
}

/// STEP 12: settings come from the manifest's `config` table, as strings. Refuse values you do
/// not understand rather than guess.
fn min_length() -> Result<usize, PluginError> {
    match config::get("min_length") {
        None => Ok(6),
        Some(value) => match value.trim().parse::<usize>() {
            Ok(n) if (4..=12).contains(&n) => Ok(n),
            _ => Err(PluginError::Internal(alloc::format!(
                "config min_length = {value:?}: must be 4 to 12"
            ))),
        },
    }
}

fn pin_in(answer: &Answer) -> &str {
    answer
        .iter()
        .find(|(name, _)| name == PIN_FIELD)
        .map_or("", |(_, value)| value.trim())
}

fn pin_field() -> Field {
    Field {
        name: PIN_FIELD.into(),
        // `code` gives a numeric keypad; `text` and `phone` exist too.
        kind: FieldKind::Code,
        label: text("PIN", "PIN"),
        hint: None,
        max_length: 12,
    }
}

/// Every text the user sees is given in English and Korean; the host picks one.
fn text(en: &str, ko: &str) -> Localized {
    Localized {
        en: String::from(en),
        ko: String::from(ko),
    }
}
