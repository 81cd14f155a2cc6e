//! Owns the choice between the two languages of the hosted pages.

/// A language the plugins write messages in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    En,
    Ko,
}

impl Lang {
    /// The language of a user's `locale` (`ko`, `ko-KR`, `ko_KR` are Korean; anything else English).
    pub fn of(locale: &str) -> Self {
        let primary = locale.split(['-', '_']).next().unwrap_or(locale);
        if primary.eq_ignore_ascii_case("ko") {
            Lang::Ko
        } else {
            Lang::En
        }
    }

    /// The English or the Korean text.
    pub fn pick<'a>(self, en: &'a str, ko: &'a str) -> &'a str {
        match self {
            Lang::En => en,
            Lang::Ko => ko,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn korean_locales_are_korean_and_the_rest_english() {
        assert_eq!(Lang::of("ko"), Lang::Ko);
        assert_eq!(Lang::of("ko-KR"), Lang::Ko);
        assert_eq!(Lang::of("KO_kr"), Lang::Ko);
        assert_eq!(Lang::of("en"), Lang::En);
        assert_eq!(Lang::of(""), Lang::En);
        assert_eq!(Lang::of("kor"), Lang::En);
        assert_eq!(Lang::Ko.pick("a", "b"), "b");
    }
}
