//! Owns the JOSE names the broker signs and verifies with (signing and verifying are in the
//! top-level `jwt` module).

use serde::{Deserialize, Serialize};

/// Signing algorithms the broker offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Alg {
    RS256,
    ES256,
    EdDSA,
}

impl Alg {
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::ES256 => "ES256",
            Alg::EdDSA => "EdDSA",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "RS256" => Some(Alg::RS256),
            "ES256" => Some(Alg::ES256),
            "EdDSA" => Some(Alg::EdDSA),
            _ => None,
        }
    }
}
