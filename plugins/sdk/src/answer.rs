//! Owns reading what the user typed: a field by name, a code without the spaces people add, and
//! free text normalised for comparison (an answer to a question).

use alloc::string::String;
use alloc::vec::Vec;

use concierge_plugin_kit::answer::{field, normalize_code};

use crate::Text;

/// The `(field name, value)` pairs of a page's answer, as the host received them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Answer(Vec<(String, String)>);

impl Answer {
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        Self(pairs)
    }

    /// The value of field `name` as sent (the first one, if sent twice).
    pub fn get(&self, name: &str) -> Option<&str> {
        field(&self.0, name)
    }

    /// The value of field `name` without leading and trailing spaces; `""` when missing.
    pub fn text(&self, name: &str) -> &str {
        self.get(name).map_or("", str::trim)
    }

    /// Field `name` as a code of exactly `digits` ASCII digits (spaces and dashes dropped).
    pub fn code(&self, name: &str, digits: usize) -> Option<String> {
        self.get(name)
            .and_then(|typed| normalize_code(typed, digits))
    }

    /// Field `name` normalised with [`normalize`], for comparing answers people type.
    pub fn normalized(&self, name: &str) -> String {
        normalize(self.text(name))
    }

    /// The choice the user picked in field `name` by typing its number (1 for the first of
    /// `choices`, as [`crate::Text::with_choices`] lists them); `None` for anything else.
    pub fn choice(&self, name: &str, choices: &[[&str; 2]]) -> Option<Text> {
        let n = self.text(name).parse::<usize>().ok()?;
        let [en, ko] = choices.get(n.checked_sub(1)?)?;
        Some(Text::new(*en, *ko))
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }
}

/// Free text as people type it, made comparable: lower case, runs of white space as one space,
/// none at either end (`"  Seoul   Station "` and `"seoul station"` are the same answer).
pub fn normalize(typed: &str) -> String {
    let mut out = String::with_capacity(typed.len());
    for word in typed.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&word.to_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::borrow::ToOwned;
    use alloc::vec;

    fn answer() -> Answer {
        Answer::new(vec![
            ("code".to_owned(), " 123-456 ".to_owned()),
            ("answer".to_owned(), "  Seoul \t STATION ".to_owned()),
            ("pick".to_owned(), " 2 ".to_owned()),
            ("zero".to_owned(), "0".to_owned()),
        ])
    }

    #[test]
    fn reads_fields_codes_and_normalised_text() {
        let a = answer();
        assert_eq!(a.code("code", 6).as_deref(), Some("123456"));
        assert_eq!(a.code("code", 8), None);
        assert_eq!(a.text("answer"), "Seoul \t STATION");
        assert_eq!(a.normalized("answer"), "seoul station");
        assert_eq!(a.text("missing"), "");
        assert_eq!(a.get("missing"), None);
        let choices = [["a", "가"], ["b", "나"]];
        assert_eq!(a.choice("pick", &choices), Some(Text::new("b", "나")));
        assert_eq!(a.choice("zero", &choices), None);
        assert_eq!(a.choice("code", &choices), None);
        assert_eq!(a.choice("missing", &choices), None);
    }

    #[test]
    fn normalising_keeps_letters_of_every_script() {
        assert_eq!(normalize(" 서울  역 "), "서울 역");
        assert_eq!(normalize("ÉCOLE"), "école");
        assert_eq!(normalize(" \n "), "");
    }
}
