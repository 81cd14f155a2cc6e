//! Owns how a journey begins: one file per start (`/authorize`, the sign-in page, a step-up).

pub mod authorize;
pub mod login_page;
pub mod manage_factors;
pub mod step_up;
