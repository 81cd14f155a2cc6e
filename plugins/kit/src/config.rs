//! Owns reading numbers from a plugin's manifest `config` table. A value that is set but out of
//! range is an error: the plugin fails closed rather than guess what the operator meant.

use alloc::format;
use alloc::string::String;

/// `value` as a whole number in `min..=max`, or `default` when unset or blank.
pub fn number(
    key: &str,
    value: Option<&str>,
    default: i64,
    min: i64,
    max: i64,
) -> Result<i64, String> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(default);
    };
    match value.parse::<i64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "config {key} = {value:?}: must be a whole number from {min} to {max}"
        )),
    }
}

/// Whole minutes for a duration in seconds, rounded up (for "expires in N minutes").
pub fn minutes(seconds: i64) -> i64 {
    (seconds.max(0) + 59) / 60
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_numbers_in_range_and_defaults_when_unset() {
        assert_eq!(number("ttl_seconds", None, 600, 60, 3600), Ok(600));
        assert_eq!(number("ttl_seconds", Some(" "), 600, 60, 3600), Ok(600));
        assert_eq!(number("ttl_seconds", Some("300"), 600, 60, 3600), Ok(300));
        assert!(number("ttl_seconds", Some("30"), 600, 60, 3600).is_err());
        assert!(number("ttl_seconds", Some("10m"), 600, 60, 3600).is_err());
        assert!(number("ttl_seconds", Some("-5"), 600, 60, 3600).is_err());
    }

    #[test]
    fn minutes_round_up() {
        assert_eq!(minutes(600), 10);
        assert_eq!(minutes(61), 2);
        assert_eq!(minutes(60), 1);
        assert_eq!(minutes(-1), 0);
    }
}
