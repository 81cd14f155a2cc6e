//! Test only: throwaway keys and self-signed certificates (one day), for the unit tests of every
//! layer that reads certificates (domain, config, upstream, saml_idp).

use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::X509;

/// A new RSA key of `bits`.
pub(crate) fn rsa(bits: u32) -> PKey<Private> {
    PKey::from_rsa(Rsa::generate(bits).unwrap()).unwrap()
}

/// A certificate of `key`, signed by itself, valid from now for a day.
pub(crate) fn self_signed(key: &PKey<Private>) -> X509 {
    let mut b = X509::builder().unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
        .unwrap();
    b.sign(key, MessageDigest::sha256()).unwrap();
    b.build()
}
