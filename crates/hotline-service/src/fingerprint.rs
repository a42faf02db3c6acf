//! The identity fingerprint as an office compares it in person: 60 decimal
//! digits in 12 groups of 5, in the manner of Signal's safety numbers.
//! Base64 is case-sensitive and mixes `l`/`I` and `O`/`0`; digits read
//! aloud or side by side cannot be confused.
//!
//! Derivation, version 1 (also in `web/src/lib/fingerprint.ts`; both check
//! the same test vector):
//!
//! ```text
//! key  = the master key's 32 bytes (its unpadded base64 decoded)
//! h    = SHA-512(0x00 0x01 || key || user_id as UTF-8)
//! 5200 times: h = SHA-512(h || key)
//! the first 60 bytes of h, in 12 chunks of 5 bytes; each chunk read as a
//! big-endian 40-bit integer, mod 100000, written as 5 digits
//! ```
//!
//! The iterations are Signal's (they make finding another key with the same
//! digits cost 5200 hashes per try); the user id binds the digits to the
//! account, so the same key shows different digits for another user.

use base64::Engine;
use sha2::{Digest, Sha512};

/// Hash iterations, as in Signal's safety numbers.
const ITERATIONS: usize = 5200;
/// The derivation's version, hashed first.
const VERSION: [u8; 2] = [0, 1];
pub const GROUPS: usize = 12;
pub const DIGITS: usize = GROUPS * 5;

/// The 12 groups of 5 digits for `key` (raw bytes) of `user_id`.
pub fn digit_groups(key: &[u8], user_id: &str) -> Vec<String> {
    let mut h = Sha512::new();
    h.update(VERSION);
    h.update(key);
    h.update(user_id.as_bytes());
    let mut hash = h.finalize();
    for _ in 0..ITERATIONS {
        let mut h = Sha512::new();
        h.update(hash);
        h.update(key);
        hash = h.finalize();
    }
    hash[..DIGITS]
        .chunks(5)
        .map(|c| {
            let n = c.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b));
            format!("{:05}", n % 100_000)
        })
        .collect()
}

/// The digit form of a master key given as unpadded (or padded) base64;
/// `None` when it is not base64.
pub fn digits_of_base64(master_key: &str, user_id: &str) -> Option<String> {
    let key = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(master_key.trim_end_matches('='))
        .ok()?;
    Some(digit_groups(&key, user_id).join(" "))
}

/// The digits a person typed (any spacing or dashes), when that is all
/// they typed and there are exactly 60 of them.
pub fn typed_digits(text: &str) -> Option<String> {
    let digits: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect();
    (digits.len() == DIGITS && digits.bytes().all(|b| b.is_ascii_digit())).then_some(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shared test vector: the same key, user id and digits are checked
    /// in web/test/fingerprint.test.mjs.
    const VECTOR_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
    const VECTOR_USER: &str = "@alma:gov.example";
    const VECTOR_DIGITS: &str =
        "37387 05678 88433 13374 79125 81185 78117 34644 96669 84652 72533 29707";

    #[test]
    fn the_shared_test_vector_gives_the_same_digits_as_the_web_app() {
        let key: Vec<u8> = (0u8..32).collect();
        assert_eq!(
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(&key),
            VECTOR_KEY
        );
        let digits = digits_of_base64(VECTOR_KEY, VECTOR_USER).unwrap();
        assert_eq!(digits, VECTOR_DIGITS);
    }

    #[test]
    fn digits_are_twelve_groups_of_five_and_depend_on_key_and_user() {
        let d = digits_of_base64(VECTOR_KEY, VECTOR_USER).unwrap();
        let groups: Vec<&str> = d.split(' ').collect();
        assert_eq!(groups.len(), GROUPS);
        assert!(groups
            .iter()
            .all(|g| g.len() == 5 && g.bytes().all(|b| b.is_ascii_digit())));
        assert_ne!(
            digits_of_base64(VECTOR_KEY, "@bruno:gov.example").unwrap(),
            d,
            "another user, other digits"
        );
        let mut other: Vec<u8> = (0u8..32).collect();
        other[31] ^= 1;
        assert_ne!(digit_groups(&other, VECTOR_USER).join(" "), d);
    }

    #[test]
    fn typed_digits_accept_any_spacing_and_only_sixty_digits() {
        let d = digits_of_base64(VECTOR_KEY, VECTOR_USER).unwrap();
        let plain = d.replace(' ', "");
        assert_eq!(typed_digits(&d).as_deref(), Some(plain.as_str()));
        assert_eq!(
            typed_digits(&d.replace(' ', "-")).as_deref(),
            Some(plain.as_str())
        );
        assert_eq!(typed_digits(&plain[..55]), None);
        assert_eq!(typed_digits(VECTOR_KEY), None);
    }
}
