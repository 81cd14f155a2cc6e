//! Owns the checks of the upstream claims an operator keeps (`keep` in an upstream's claim or
//! attribute mapping) and lets MFA plugins read (`[[mfa.plugins]] claims`).

/// Claims or attributes an upstream may keep per user (`keep`).
pub const MAX_KEPT: usize = 16;
/// Characters of a kept name; a value longer than [`MAX_KEPT_VALUE`] bytes is not kept.
pub const MAX_KEPT_NAME: usize = 256;
pub const MAX_KEPT_VALUE: usize = 1024;

/// Checks a `keep` list: at most [`MAX_KEPT`] distinct names of 1 to [`MAX_KEPT_NAME`]
/// characters without whitespace or control characters.
pub fn check_keep(names: &[String]) -> Result<(), String> {
    if names.len() > MAX_KEPT {
        return Err(format!("lists at most {MAX_KEPT} names"));
    }
    for (i, n) in names.iter().enumerate() {
        if n.is_empty()
            || n.chars().count() > MAX_KEPT_NAME
            || n.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!(
                "`{n}` must be 1 to {MAX_KEPT_NAME} characters without spaces"
            ));
        }
        if names[..i].contains(n) {
            return Err(format!("lists `{n}` twice"));
        }
    }
    Ok(())
}
