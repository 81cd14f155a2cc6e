//! Owns phone numbers: parsing what the user typed into E.164 and masking a number for display.

use alloc::string::String;

/// The E.164 form (`+821012345678`) of a typed number. Spaces, dashes, dots and parentheses are
/// dropped; the rest must be `+` and 8 to 15 digits, the first not `0`.
pub fn parse_e164(typed: &str) -> Option<String> {
    let compact: String = typed
        .chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '-' | '.' | '(' | ')'))
        .collect();
    let digits = compact.strip_prefix('+')?;
    let valid = (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    valid.then_some(compact)
}

/// A number with all but its country-code start and last four digits hidden (`+82•••••••5678`),
/// to tell the user where a code went without showing the whole number.
pub fn mask(e164: &str) -> String {
    let digits = e164.strip_prefix('+').unwrap_or(e164);
    let count = digits.chars().count();
    let mut masked = String::from("+");
    for (index, c) in digits.chars().enumerate() {
        if index < 2 || index + 4 >= count {
            masked.push(c);
        } else {
            masked.push('•');
        }
    }
    masked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_e164_with_the_usual_separators() {
        assert_eq!(
            parse_e164("+821012345678").as_deref(),
            Some("+821012345678")
        );
        assert_eq!(
            parse_e164(" +82 10-1234-5678 ").as_deref(),
            Some("+821012345678")
        );
        assert_eq!(
            parse_e164("+1 (415) 555.0100").as_deref(),
            Some("+14155550100")
        );
    }

    #[test]
    fn refuses_what_is_not_e164() {
        assert_eq!(parse_e164("01012345678"), None, "no country code");
        assert_eq!(parse_e164("+0101234567"), None, "leading zero");
        assert_eq!(parse_e164("+1234567"), None, "too short");
        assert_eq!(parse_e164("+1234567890123456"), None, "too long");
        assert_eq!(parse_e164("+82 10 1234 567a"), None);
        assert_eq!(parse_e164("++821012345678"), None);
        assert_eq!(parse_e164(""), None);
    }

    #[test]
    fn masks_the_middle() {
        assert_eq!(mask("+821012345678"), "+82••••••5678");
        assert_eq!(mask("+12345678"), "+12••5678");
    }
}
