//! Owns how a journey begins: one file per start (`/authorize`, a SAML AuthnRequest, an
//! IdP-initiated SAML sign-in, the sign-in page, a step-up,
//! managing factors), and the single sign-on decision every relying party's start shares.

pub mod authorize;
pub mod login_page;
pub mod manage_factors;
pub mod saml_idp_initiated;
pub mod saml_sso;
pub mod single_sign_on;
pub mod step_up;
