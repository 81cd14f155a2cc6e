//! Owns every text the email plugin shows or sends, in English and Korean.

use alloc::format;
use alloc::string::String;

use concierge_plugin_kit::locale::Lang;

/// An English and a Korean text.
pub type Text = (String, String);

fn both(en: &str, ko: &str) -> Text {
    (en.into(), ko.into())
}

pub fn name() -> Text {
    both("Email code", "이메일 인증 코드")
}

pub fn intro(masked_email: &str) -> Text {
    (
        format!("We sent a 6-digit code to {masked_email}. Enter it below."),
        format!("{masked_email}(으)로 6자리 코드를 보냈습니다. 아래에 입력하세요."),
    )
}

pub fn code_label() -> Text {
    both("Code", "코드")
}

pub fn code_hint() -> Text {
    both("6 digits from the email", "이메일에 있는 6자리 숫자")
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

/// The subject and body of the email, in the user's language.
pub fn message(lang: Lang, issuer: &str, code: &str, minutes: i64) -> (String, String) {
    match lang {
        Lang::En => (
            format!("Your {issuer} sign-in code"),
            format!(
                "Your {issuer} sign-in code is {code}.\n\n\
                 It expires in {minutes} minutes and works once. Never share it: {issuer} \
                 will never ask you for it.\n\n\
                 If you did not just try to sign in, someone may know your password. \
                 Change it.\n"
            ),
        ),
        Lang::Ko => (
            format!("{issuer} 로그인 인증 코드"),
            format!(
                "{issuer} 로그인 인증 코드는 {code}입니다.\n\n\
                 이 코드는 {minutes}분 동안 한 번만 사용할 수 있습니다. 다른 사람에게 \
                 알려 주지 마세요. {issuer}은(는) 이 코드를 묻지 않습니다.\n\n\
                 방금 로그인을 시도하지 않았다면 다른 사람이 비밀번호를 알고 있을 수 \
                 있습니다. 비밀번호를 변경하세요.\n"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_carries_the_code_in_the_users_language() {
        let (subject, body) = message(Lang::En, "Concierge", "042117", 10);
        assert_eq!(subject, "Your Concierge sign-in code");
        assert!(
            body.contains("042117") && body.contains("10 minutes"),
            "{body}"
        );
        let (subject, body) = message(Lang::Ko, "Concierge", "042117", 10);
        assert!(subject.contains("인증 코드"));
        assert!(body.contains("042117") && body.contains("10분"), "{body}");
    }
}
