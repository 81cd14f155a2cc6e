//! Owns how a secret key of the configuration is read: inline (file or `CONCIERGE__…`
//! variable) or from a `<key>_file` (e.g. a container secret under `/run/secrets`), never both.

use std::path::Path;

use secrecy::SecretString;

/// The secret of `key`: its inline value, or the content of `key_file` with one trailing
/// newline removed. `invalid(key, message)` names the offending key; messages never hold the
/// secret.
pub(crate) fn resolve<E>(
    key: &str,
    inline: Option<&SecretString>,
    file: Option<&Path>,
    invalid: impl Fn(&str, String) -> E,
) -> Result<Option<SecretString>, E> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(invalid(
            &format!("{key}_file"),
            format!("set either `{key}` or `{key}_file`, not both"),
        )),
        (Some(s), None) => Ok(Some(s.clone())),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                invalid(
                    &format!("{key}_file"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let trimmed = text
                .strip_suffix("\r\n")
                .or_else(|| text.strip_suffix('\n'))
                .unwrap_or(&text);
            Ok(Some(SecretString::from(trimmed)))
        }
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn err(key: &str, m: String) -> String {
        format!("{key}: {m}")
    }

    #[test]
    fn a_file_loses_one_trailing_newline_and_errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        for (content, expected) in [
            ("v3ry-s3cret\n", "v3ry-s3cret"),
            ("v3ry-s3cret\r\n", "v3ry-s3cret"),
            ("v3ry-s3cret\n\n", "v3ry-s3cret\n"),
            ("v3ry-s3cret", "v3ry-s3cret"),
            (" v3ry-s3cret \n", " v3ry-s3cret "),
        ] {
            std::fs::write(&p, content).unwrap();
            let s = resolve("a.password", None, Some(&p), err).unwrap().unwrap();
            assert_eq!(s.expose_secret(), expected);
        }
        let m = resolve("a.password", None, Some(&dir.path().join("missing")), err).unwrap_err();
        assert!(m.starts_with("a.password_file: cannot read"), "{m}");
        let inline = SecretString::from("x");
        let m = resolve("a.password", Some(&inline), Some(&p), err).unwrap_err();
        assert!(m.starts_with("a.password_file: set either"), "{m}");
        let s = resolve("a.password", Some(&inline), None, err).unwrap();
        assert_eq!(s.map(|s| s.expose_secret().to_owned()), Some("x".into()));
        assert!(resolve("a.password", None, None, err).unwrap().is_none());
    }
}
