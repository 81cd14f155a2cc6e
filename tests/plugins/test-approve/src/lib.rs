//! Owns the contract 0.2 waiting test factor `test-approve`: a push approval with number
//! matching against the tests' approval service (config `service`, its origin granted in the
//! manifest). `wait-begin` draws a two-digit number and two other ones, starts an approval with
//! the three (shuffled), and shows the right one; `poll` accepts only when the approver picked
//! that number. Part of the plugin host's test corpus (tests/plugins), built by plugins/build.sh.
#![cfg_attr(target_arch = "wasm32", no_std)]
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

extern crate alloc;
// The wasm32 allocator and panic handler.
extern crate concierge_plugin_kit as _;

/// Three distinct two-digit numbers from random bytes: the first is the one to show; the list is
/// the order the approver sees them in.
fn numbers(bytes: &[u8]) -> (u8, [u8; 3]) {
    let mut picked: [u8; 3] = [0; 3];
    let mut n = 0;
    for b in bytes {
        let v = 10 + b % 90;
        if !picked[..n].contains(&v) {
            picked[n] = v;
            n += 1;
            if n == 3 {
                break;
            }
        }
    }
    if n < 3 {
        picked = [42, 17, 86];
    }
    let right = picked[0];
    let shift = usize::from(bytes.last().copied().unwrap_or(0) % 3);
    picked.rotate_left(shift);
    (right, picked)
}

#[cfg(target_arch = "wasm32")]
mod factor;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_distinct_two_digit_numbers_the_right_one_among_them() {
        for seed in 0u8..=255 {
            let bytes: [u8; 8] =
                core::array::from_fn(|i| seed.wrapping_mul(31).wrapping_add(i as u8 * 7));
            let (right, all) = numbers(&bytes);
            assert!(all.contains(&right));
            assert!(all.iter().all(|n| (10..=99).contains(n)));
            assert!(all[0] != all[1] && all[1] != all[2] && all[0] != all[2]);
        }
    }
}
