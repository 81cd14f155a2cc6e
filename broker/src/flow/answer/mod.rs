//! Owns how a journey answers its target: one file per protocol (today the OpenID
//! authorization response).

pub mod openid;
