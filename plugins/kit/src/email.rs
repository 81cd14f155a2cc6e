//! Owns showing an email address without giving all of it away.

use alloc::string::String;

/// `a•••@example.com` for `ana@example.com`: the first character and the domain.
pub fn mask(email: &str) -> String {
    let (local, domain) = email.rsplit_once('@').unwrap_or((email, ""));
    let mut masked = String::new();
    if let Some(first) = local.chars().next() {
        masked.push(first);
    }
    masked.push_str("•••");
    if !domain.is_empty() {
        masked.push('@');
        masked.push_str(domain);
    }
    masked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_character_and_the_domain() {
        assert_eq!(mask("ana@example.com"), "a•••@example.com");
        assert_eq!(mask("한글@example.kr"), "한•••@example.kr");
        assert_eq!(mask("@x"), "•••@x");
        assert_eq!(mask("nodomain"), "n•••");
    }
}
