//! Owns the template factor: a PIN the user picks at enrolment and types at sign-in. Copy this
//! crate to write your own plugin; each numbered STEP comment is a place you will change.
//!
//! A real factor proves something a password does not (a device, an inbox, a phone); a PIN is
//! here because it shows the whole contract in few lines: enrolment with state, a challenge
//! form, a verdict with an attempt limit, texts in English and Korean, config, random bytes and
//! fail-closed errors. Grants it needs: `clock`, `random`, `state` (`config` is always linked).

// STEP 1: no_std on wasm32 keeps the component small; the SDK's prelude brings `String`,
// `Vec`, `format!`, the contract's types and the helpers.
#![cfg_attr(target_arch = "wasm32", no_std)]

use concierge_plugin_sdk::prelude::*;

// STEP 2: your per-user state, one typed key per value. State is the only memory between calls
// (each call gets a fresh instance) and is per plugin and per user: a call sees only its user's.
const PIN: Key<Hashed> = Key::new("pin");
// Wrong answers before the factor refuses to check for a while (here 5, then 15 minutes).
const ATTEMPTS: Attempts = Attempts::new("attempts", 5, 15 * 60);
/// The form field; it comes back as `("pin", value)` in the answer.
const FIELD: &str = "pin";

struct Template;

// STEP 3: export your type as the component's factor.
export!(Template);

impl Factor for Template {
    // STEP 4: who you are. `id` must equal the manifest's `id` ([a-z0-9-]{1,32}); `amr` are RFC
    // 8176 values (a PIN is something you know: "pin"). Called at load with no capability:
    // return constants.
    fn describe() -> Description {
        Description::new("template", text("Personal PIN", "개인 PIN")).amr("pin")
    }

    // STEP 5: whether this user can be challenged. Cheap: one state read.
    fn is_enrolled(_user: &User) -> bool {
        PIN.is_set()
    }

    // STEP 6: the first enrolment page. A plugin never writes HTML: the host renders the form
    // in the user's language and sends the answer to `enroll_finish`.
    fn enroll_begin(_user: &User) -> Result<Form> {
        let min = min_length()?;
        let intro = Text::new(
            format!("Choose a PIN of {min} to 12 digits. You will type it when you sign in."),
            format!("{min}~12자리 숫자로 PIN을 정하세요. 로그인할 때 입력합니다."),
        );
        Ok(Form::new(intro).field(pin_field()))
    }

    // STEP 7: the enrolment answer. Malformed input is `bad_input` (shown to the user); a
    // failing capability is `unavailable`; `Done` ends enrolment, `Next(form)` asks again.
    // Keep only a hash of what the user typed (`Hashed`: salted, compared in constant time).
    fn enroll_finish(_user: &User, answer: &Answer) -> Result<EnrollStep> {
        let typed = answer.text(FIELD);
        let min = usize::try_from(min_length()?).unwrap_or(12);
        if !(min..=12).contains(&typed.len()) || !typed.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::bad_input(text(
                "A PIN is digits only, of the length shown.",
                "PIN은 안내된 길이의 숫자로만 정하세요.",
            )));
        }
        PIN.set(&Hashed::new(typed)?)?;
        ATTEMPTS.reset();
        Ok(EnrollStep::Done)
    }

    // STEP 8: start a challenge: send what must be sent (`email::send`, `sms::send`, with a code
    // from `code::issue`) and return the page.
    fn challenge(_user: &User) -> Result<Form> {
        if !PIN.is_set() {
            return Err(Error::NotEnrolled);
        }
        Ok(Form::new(text("Enter your PIN.", "PIN을 입력하세요.")).field(pin_field()))
    }

    // STEP 9: the verdict. `Accepted` only when the answer proves the factor; a wrong answer is
    // `rejected` with a message. Every error, trap, timeout or exhausted budget fails the
    // factor: the host never treats a failure as a pass.
    fn verify(_user: &User, answer: &Answer) -> Result<Verdict> {
        let pin = PIN.get().ok_or(Error::NotEnrolled)?;
        let typed = answer.text(FIELD);
        ATTEMPTS.verify(
            || pin.matches(typed),
            text("That PIN is not correct.", "PIN이 올바르지 않습니다."),
        )
    }
}

// STEP 10: settings come from the manifest's `config` table, as strings. Refuse values you do
// not understand rather than guess (`config::number` returns an `internal` error).
fn min_length() -> Result<i64> {
    config::number("min_length", 6, 4, 12)
}

fn pin_field() -> Field {
    // `code` gives a numeric keypad; `Field::text` and `Field::phone` exist too.
    Field::code(FIELD, text("PIN", "PIN")).max_length(12)
}
