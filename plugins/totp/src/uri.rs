//! Owns the `otpauth://` URI an authenticator app reads from the enrolment QR code (the Key Uri
//! Format: label `issuer:account`, then secret, issuer, algorithm, digits and period).

use alloc::format;
use alloc::string::String;
use core::fmt::Write;

/// The host's limit on a form's `qr` (bytes).
pub const MAX_QR_BYTES: usize = 1024;

/// `otpauth://totp/ISSUER:ACCOUNT?secret=…&issuer=…&algorithm=…&digits=…&period=…`.
pub fn otpauth(
    issuer: &str,
    account: &str,
    secret_base32: &str,
    algorithm: &str,
    digits: u8,
    period: u64,
) -> String {
    let issuer = percent_encode(issuer);
    format!(
        "otpauth://totp/{issuer}:{account}?secret={secret_base32}&issuer={issuer}\
         &algorithm={algorithm}&digits={digits}&period={period}",
        account = percent_encode(account),
    )
}

/// RFC 3986 percent-encoding of everything but the unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_key_uri() {
        assert_eq!(
            otpauth("Concierge", "ana@example.com", "GEZDGNBV", "SHA1", 6, 30),
            "otpauth://totp/Concierge:ana%40example.com?secret=GEZDGNBV&issuer=Concierge\
             &algorithm=SHA1&digits=6&period=30"
        );
    }

    #[test]
    fn encodes_spaces_colons_and_non_ascii() {
        assert_eq!(percent_encode("Example Corp"), "Example%20Corp");
        assert_eq!(percent_encode("a:b&c=d?"), "a%3Ab%26c%3Dd%3F");
        assert_eq!(percent_encode("회사"), "%ED%9A%8C%EC%82%AC");
        assert_eq!(percent_encode("a-b.c_d~e"), "a-b.c_d~e");
    }
}
