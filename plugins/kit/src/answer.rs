//! Owns reading the user's answer: finding a field and normalising a typed code.

use alloc::string::String;

/// The value of field `name` in an answer (the first one, if the host sent it twice).
pub fn field<'a>(answer: &'a [(String, String)], name: &str) -> Option<&'a str> {
    answer
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// A code as typed, without the spaces and dashes people add (`123 456`, `123-456`); `None` if
/// what is left is not exactly `digits` ASCII digits.
pub fn normalize_code(typed: &str, digits: usize) -> Option<String> {
    let code: String = typed
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect();
    (code.len() == digits && code.bytes().all(|b| b.is_ascii_digit())).then_some(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::borrow::ToOwned;
    use alloc::vec;

    #[test]
    fn finds_the_first_field_of_that_name() {
        let answer = vec![
            ("code".to_owned(), "1".to_owned()),
            ("code".to_owned(), "2".to_owned()),
        ];
        assert_eq!(field(&answer, "code"), Some("1"));
        assert_eq!(field(&answer, "phone"), None);
    }

    #[test]
    fn codes_lose_spaces_and_dashes_and_must_have_the_right_length() {
        assert_eq!(normalize_code(" 123 456 ", 6).as_deref(), Some("123456"));
        assert_eq!(normalize_code("123-456", 6).as_deref(), Some("123456"));
        assert_eq!(normalize_code("12345", 6), None);
        assert_eq!(normalize_code("1234567", 6), None);
        assert_eq!(normalize_code("12345a", 6), None);
        assert_eq!(
            normalize_code("１２３４５６", 6),
            None,
            "full-width digits are not ASCII"
        );
        assert_eq!(normalize_code("12345678", 8).as_deref(), Some("12345678"));
    }
}
