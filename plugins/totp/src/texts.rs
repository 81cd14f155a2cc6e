//! Owns every text the TOTP plugin shows, in English and Korean (`(en, ko)` pairs).

use alloc::format;
use alloc::string::String;

/// An English and a Korean text.
pub type Text = (String, String);

fn both(en: &str, ko: &str) -> Text {
    (en.into(), ko.into())
}

pub fn name() -> Text {
    both("Authenticator app", "인증 앱")
}

pub fn enroll_intro(digits: u8) -> Text {
    (
        format!(
            "Scan this QR code with your authenticator app, or type the key below into it. \
             Then enter the {digits}-digit code the app shows."
        ),
        format!(
            "인증 앱으로 이 QR 코드를 스캔하거나 아래 키를 앱에 직접 입력하세요. \
             그런 다음 앱에 표시된 {digits}자리 코드를 입력하세요."
        ),
    )
}

pub fn challenge_intro() -> Text {
    both(
        "Enter the code shown in your authenticator app.",
        "인증 앱에 표시된 코드를 입력하세요.",
    )
}

pub fn code_label() -> Text {
    both("Code", "코드")
}

pub fn code_hint(digits: u8) -> Text {
    (
        format!("{digits} digits from the app"),
        format!("앱에 표시된 {digits}자리 숫자"),
    )
}

pub fn malformed(digits: u8) -> Text {
    (
        format!("Enter the {digits}-digit code, digits only."),
        format!("{digits}자리 코드를 숫자로만 입력하세요."),
    )
}

pub fn wrong() -> Text {
    both(
        "That code is not correct. Check that your device's clock is right and try again.",
        "코드가 올바르지 않습니다. 기기의 시계가 정확한지 확인한 뒤 다시 시도하세요.",
    )
}

pub fn replayed() -> Text {
    both(
        "That code was already used. Wait for the app to show a new code and enter it.",
        "이미 사용된 코드입니다. 앱에 새 코드가 표시되면 입력하세요.",
    )
}

pub fn no_pending_enrollment() -> Text {
    both(
        "This set-up is no longer open. Start again.",
        "이 설정은 더 이상 진행할 수 없습니다. 처음부터 다시 시작하세요.",
    )
}
