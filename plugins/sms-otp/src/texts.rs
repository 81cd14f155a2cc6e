//! Owns every text the SMS plugin shows or sends, in English and Korean.

use alloc::format;
use alloc::string::String;

use concierge_plugin_kit::locale::Lang;

/// An English and a Korean text.
pub type Text = (String, String);

fn both(en: &str, ko: &str) -> Text {
    (en.into(), ko.into())
}

pub fn name() -> Text {
    both("Text message code", "문자 메시지 인증 코드")
}

pub fn phone_intro() -> Text {
    both(
        "Enter the mobile number to send sign-in codes to, with its country code. \
         We will send a code to check it.",
        "로그인 코드를 받을 휴대폰 번호를 국가 번호와 함께 입력하세요. \
         확인을 위해 코드를 보내 드립니다.",
    )
}

pub fn phone_label() -> Text {
    both("Mobile number", "휴대폰 번호")
}

pub fn phone_hint() -> Text {
    both(
        "With the country code, e.g. +82 10 1234 5678",
        "국가 번호 포함, 예: +82 10 1234 5678",
    )
}

pub fn bad_phone() -> Text {
    both(
        "Enter the number with its country code, starting with +.",
        "+로 시작하는 국가 번호를 포함해 번호를 입력하세요.",
    )
}

pub fn sent_intro(masked_phone: &str) -> Text {
    (
        format!("We sent a 6-digit code to {masked_phone}. Enter it below."),
        format!("{masked_phone}(으)로 6자리 코드를 보냈습니다. 아래에 입력하세요."),
    )
}

pub fn code_label() -> Text {
    both("Code", "코드")
}

pub fn code_hint() -> Text {
    both(
        "6 digits from the text message",
        "문자 메시지에 있는 6자리 숫자",
    )
}

pub fn malformed() -> Text {
    both(
        "Enter the 6-digit code, digits only.",
        "6자리 코드를 숫자로만 입력하세요.",
    )
}

pub fn wrong() -> Text {
    both(
        "That code is not correct. Try again.",
        "코드가 올바르지 않습니다. 다시 시도하세요.",
    )
}

pub fn expired() -> Text {
    both(
        "That code has expired. Ask for a new one.",
        "코드가 만료되었습니다. 새 코드를 요청하세요.",
    )
}

pub fn too_many_attempts() -> Text {
    both(
        "Too many wrong codes. Ask for a new one.",
        "잘못된 코드를 너무 많이 입력했습니다. 새 코드를 요청하세요.",
    )
}

pub fn no_code() -> Text {
    both(
        "No code is waiting for you. Ask for a new one.",
        "확인할 코드가 없습니다. 새 코드를 요청하세요.",
    )
}

pub fn wait_before_resend(seconds: i64) -> Text {
    (
        format!("A code was just sent. Wait {seconds} seconds before asking for another."),
        format!("방금 코드를 보냈습니다. 다른 코드를 요청하려면 {seconds}초 기다리세요."),
    )
}

pub fn enrollment_gone() -> Text {
    both(
        "This set-up is no longer open. Start again.",
        "이 설정은 더 이상 진행할 수 없습니다. 처음부터 다시 시작하세요.",
    )
}

/// The text message, in the user's language: short, so it fits one SMS where it can.
pub fn message(lang: Lang, issuer: &str, code: &str, minutes: i64) -> String {
    match lang {
        Lang::En => format!("{issuer} code: {code}. Valid for {minutes} min. Never share it."),
        Lang::Ko => {
            format!("[{issuer}] 인증 코드: {code} ({minutes}분간 유효). 타인에게 알려 주지 마세요.")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_is_short_and_carries_the_code() {
        let en = message(Lang::En, "Concierge", "042117", 10);
        assert_eq!(
            en,
            "Concierge code: 042117. Valid for 10 min. Never share it."
        );
        assert!(en.len() <= 160);
        let ko = message(Lang::Ko, "Concierge", "042117", 10);
        assert!(ko.contains("042117") && ko.contains("10분"));
        // A UCS-2 SMS holds 70 characters.
        assert!(ko.chars().count() <= 70, "{}", ko.chars().count());
    }
}
