//! Owns typed per-user state: a `Key<T>` names one value of the user a call is about, and
//! `Stored` turns values into the bytes the host keeps (versioned, length-prefixed, so records
//! nest: a tuple of a `Text` and a `Hashed` is one value). Bytes that do not decode read as
//! no value: the factor then treats the user as not enrolled, it never guesses.

use alloc::string::String;
use alloc::vec::Vec;
use core::marker::PhantomData;

use crate::{Error, Result, Text};

/// Format byte in front of every value the SDK stores.
const FORMAT: u8 = 1;

/// A value kept in state. Implemented for numbers, `bool`, `String`, `Vec<u8>`, `Text`,
/// `Option`, tuples, [`crate::hashed::Hashed`], [`crate::code::Pending`] and the attempt counter;
/// implement it for your own records with the same two functions.
pub trait Stored: Sized {
    /// Appends this value's bytes.
    fn put(&self, out: &mut Vec<u8>);
    /// Reads one value from the front of `input`, advancing it; `None` if it is not one.
    fn take(input: &mut &[u8]) -> Option<Self>;
}

/// The bytes kept for `value`.
pub fn encode<T: Stored>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    out.push(FORMAT);
    value.put(&mut out);
    out
}

/// The value stored as `bytes`, if they are exactly one `T`.
pub fn decode<T: Stored>(bytes: &[u8]) -> Option<T> {
    let (&format, mut rest) = bytes.split_first()?;
    if format != FORMAT {
        return None;
    }
    let value = T::take(&mut rest)?;
    rest.is_empty().then_some(value)
}

/// One named value of the user's state (grant `state`): per plugin and per user, at most 32
/// keys of at most 64 bytes, values of at most 4096 bytes. Declare keys as constants:
/// `const ANSWER: Key<Hashed> = Key::new("answer");`
pub struct Key<T> {
    name: &'static str,
    value: PhantomData<fn() -> T>,
}

impl<T: Stored> Key<T> {
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            value: PhantomData,
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The value, if one is stored and decodes.
    pub fn get(&self) -> Option<T> {
        crate::bindings::v1::state::get(self.name).and_then(|bytes| decode(&bytes))
    }

    /// Whether a value is stored and decodes.
    pub fn is_set(&self) -> bool {
        self.get().is_some()
    }

    /// Stores `value` (it takes effect when the call returns normally); a host refusal (state
    /// full, value too long) is `unavailable`.
    pub fn set(&self, value: &T) -> Result<()> {
        crate::bindings::v1::state::set(self.name, &encode(value)).map_err(Error::Unavailable)
    }

    pub fn delete(&self) {
        crate::bindings::v1::state::delete(self.name);
    }
}

fn take_bytes<'a>(input: &mut &'a [u8], len: usize) -> Option<&'a [u8]> {
    if input.len() < len {
        return None;
    }
    let (head, rest) = input.split_at(len);
    *input = rest;
    Some(head)
}

fn take_array<const N: usize>(input: &mut &[u8]) -> Option<[u8; N]> {
    take_bytes(input, N)?.try_into().ok()
}

macro_rules! stored_number {
    ($($t:ty),*) => {$(
        impl Stored for $t {
            fn put(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_be_bytes());
            }
            fn take(input: &mut &[u8]) -> Option<Self> {
                take_array(input).map(<$t>::from_be_bytes)
            }
        }
    )*};
}
stored_number!(u8, u16, u32, u64, i64);

impl Stored for bool {
    fn put(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
    fn take(input: &mut &[u8]) -> Option<Self> {
        match u8::take(input)? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }
}

impl Stored for Vec<u8> {
    fn put(&self, out: &mut Vec<u8>) {
        // State values are at most 4096 bytes: a u32 length always fits.
        (u32::try_from(self.len()).unwrap_or(u32::MAX)).put(out);
        out.extend_from_slice(self);
    }
    fn take(input: &mut &[u8]) -> Option<Self> {
        let len = usize::try_from(u32::take(input)?).ok()?;
        take_bytes(input, len).map(<[u8]>::to_vec)
    }
}

impl Stored for String {
    fn put(&self, out: &mut Vec<u8>) {
        (u32::try_from(self.len()).unwrap_or(u32::MAX)).put(out);
        out.extend_from_slice(self.as_bytes());
    }
    fn take(input: &mut &[u8]) -> Option<Self> {
        String::from_utf8(Vec::take(input)?).ok()
    }
}

impl Stored for Text {
    fn put(&self, out: &mut Vec<u8>) {
        self.en.put(out);
        self.ko.put(out);
    }
    fn take(input: &mut &[u8]) -> Option<Self> {
        Some(Text::new(String::take(input)?, String::take(input)?))
    }
}

impl<T: Stored> Stored for Option<T> {
    fn put(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(0),
            Some(value) => {
                out.push(1);
                value.put(out);
            }
        }
    }
    fn take(input: &mut &[u8]) -> Option<Self> {
        match u8::take(input)? {
            0 => Some(None),
            1 => Some(Some(T::take(input)?)),
            _ => None,
        }
    }
}

impl<A: Stored, B: Stored> Stored for (A, B) {
    fn put(&self, out: &mut Vec<u8>) {
        self.0.put(out);
        self.1.put(out);
    }
    fn take(input: &mut &[u8]) -> Option<Self> {
        Some((A::take(input)?, B::take(input)?))
    }
}

impl<A: Stored, B: Stored, C: Stored> Stored for (A, B, C) {
    fn put(&self, out: &mut Vec<u8>) {
        self.0.put(out);
        self.1.put(out);
        self.2.put(out);
    }
    fn take(input: &mut &[u8]) -> Option<Self> {
        Some((A::take(input)?, B::take(input)?, C::take(input)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text;
    use alloc::vec;

    #[test]
    fn values_round_trip() {
        let value = (
            text("What was your first school?", "처음 다닌 학교는?"),
            (42u8, -7i64),
            Some(String::from("x")),
        );
        assert_eq!(decode(&encode(&value)), Some(value));
        assert_eq!(decode::<bool>(&encode(&true)), Some(true));
        assert_eq!(
            decode::<Vec<u8>>(&encode(&vec![1u8, 2, 3])),
            Some(vec![1, 2, 3])
        );
        assert_eq!(decode::<Option<u32>>(&encode(&None::<u32>)), Some(None));
    }

    #[test]
    fn anything_else_is_no_value() {
        let bytes = encode(&String::from("answer"));
        assert_eq!(decode::<String>(&bytes[..bytes.len() - 1]), None, "short");
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode::<String>(&longer), None, "trailing bytes");
        let mut other_format = bytes.clone();
        other_format[0] = 2;
        assert_eq!(decode::<String>(&other_format), None, "unknown format");
        assert_eq!(decode::<String>(&[]), None);
        assert_eq!(decode::<bool>(&[FORMAT, 2]), None);
        assert_eq!(
            decode::<String>(&[FORMAT, 0, 0, 0, 1, 0xff]),
            None,
            "not UTF-8"
        );
        assert_eq!(
            decode::<String>(&[FORMAT, 0xff, 0xff, 0xff, 0xff]),
            None,
            "huge length"
        );
    }
}
