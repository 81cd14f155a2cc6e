//! Owns one-time codes: drawing a uniform decimal code from random bytes and comparing codes in
//! constant time.

use alloc::string::String;
use core::fmt::Write;

use subtle::ConstantTimeEq;

/// Random bytes to ask the host for per draw: eight 32-bit candidates, so a draw practically
/// never runs out (each candidate is rejected with probability below 0.03%).
pub const RANDOM_BYTES_PER_DRAW: u32 = 32;

/// A uniform `digits`-digit code (leading zeros kept) from random bytes, by rejection sampling
/// over 32-bit candidates: a candidate at or above the largest multiple of 10^digits below 2^32
/// is skipped, so every code is equally likely. `None` if every candidate was rejected (ask for
/// more bytes) or `digits` is not 1..=9.
pub fn code_from_random(random: &[u8], digits: u32) -> Option<String> {
    if !(1..=9).contains(&digits) {
        return None;
    }
    let modulus = 10u64.pow(digits);
    let limit = (1u64 << 32) / modulus * modulus;
    let candidate = random
        .chunks_exact(4)
        .map(|chunk| u64::from(u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]])))
        .find(|candidate| *candidate < limit)?;
    let mut code = String::with_capacity(digits as usize);
    write!(
        code,
        "{:0width$}",
        candidate % modulus,
        width = digits as usize
    )
    .ok()?;
    Some(code)
}

/// A uniform `digits`-digit code drawn from `random` (the host's `random.bytes`), asking again
/// (at most four times in all) in the practically impossible case that every candidate was
/// rejected; `None` if the source gives nothing usable.
pub fn draw(mut random: impl FnMut(u32) -> alloc::vec::Vec<u8>, digits: u32) -> Option<String> {
    (0..4).find_map(|_| code_from_random(&random(RANDOM_BYTES_PER_DRAW), digits))
}

/// Whether two codes are equal, in time that does not depend on where they differ.
pub fn codes_match(expected: &str, typed: &str) -> bool {
    expected.as_bytes().ct_eq(typed.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_the_asked_length_and_keep_leading_zeros() {
        assert_eq!(
            code_from_random(&[7, 0, 0, 0], 6).as_deref(),
            Some("000007")
        );
        assert_eq!(
            code_from_random(&[0x40, 0xe2, 0x01, 0x00], 6).as_deref(),
            Some("123456")
        );
        assert_eq!(
            code_from_random(&[1, 0, 0, 0], 8).as_deref(),
            Some("00000001")
        );
    }

    #[test]
    fn candidates_in_the_biased_tail_are_rejected() {
        // 4_294_000_000 is the largest multiple of 10^6 below 2^32: it and above are skipped.
        let tail = 4_294_000_000u32.to_le_bytes();
        let top = u32::MAX.to_le_bytes();
        let below = 4_293_999_999u32.to_le_bytes();
        assert_eq!(code_from_random(&tail, 6), None);
        assert_eq!(code_from_random(&top, 6), None);
        assert_eq!(code_from_random(&below, 6).as_deref(), Some("999999"));
        let mut both = [0u8; 8];
        both[..4].copy_from_slice(&top);
        both[4..].copy_from_slice(&42u32.to_le_bytes());
        assert_eq!(code_from_random(&both, 6).as_deref(), Some("000042"));
    }

    #[test]
    fn too_few_bytes_or_a_bad_length_give_nothing() {
        assert_eq!(code_from_random(&[1, 2, 3], 6), None);
        assert_eq!(code_from_random(&[], 6), None);
        assert_eq!(code_from_random(&[1, 0, 0, 0], 0), None);
        assert_eq!(code_from_random(&[1, 0, 0, 0], 10), None);
    }

    #[test]
    fn every_digit_value_occurs_for_a_sweep_of_candidates() {
        let mut seen = [0u32; 10];
        for n in 0u32..10_000 {
            let code = code_from_random(&n.wrapping_mul(2_654_435_761).to_le_bytes(), 1);
            let digit = code.and_then(|c| c.parse::<usize>().ok()).unwrap_or(99);
            assert!(digit < 10);
            seen[digit] += 1;
        }
        assert!(seen.iter().all(|count| *count > 900), "{seen:?}");
    }

    #[test]
    fn draw_asks_again_when_everything_was_rejected() {
        let mut calls = 0;
        let code = draw(
            |len| {
                calls += 1;
                assert_eq!(len, RANDOM_BYTES_PER_DRAW);
                if calls < 3 {
                    alloc::vec![0xff; len as usize]
                } else {
                    5u32.to_le_bytes().to_vec()
                }
            },
            6,
        );
        assert_eq!(code.as_deref(), Some("000005"));
        assert_eq!(calls, 3);
        assert_eq!(
            draw(|_| alloc::vec::Vec::new(), 6),
            None,
            "a source that gives nothing"
        );
    }

    #[test]
    fn comparison_is_exact() {
        assert!(codes_match("123456", "123456"));
        assert!(!codes_match("123456", "123457"));
        assert!(!codes_match("123456", "12345"));
        assert!(!codes_match("123456", ""));
    }
}
