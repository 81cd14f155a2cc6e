//! Owns what the browser proves in a journey: one file per step (password, upstream, second
//! factor, session limit, "continue as").

pub mod continue_as;
pub mod password;
pub mod recovery_code;
pub mod remove_factor;
pub mod renew_recovery_codes;
pub mod second_factor;
pub mod session_limit;
pub mod upstream;
