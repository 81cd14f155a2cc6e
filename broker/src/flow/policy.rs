//! Owns the MFA policy: whether a sign-in (or an app's authorization on an existing session)
//! needs a second factor, from the `[mfa]` default, the client, the upstream (and whether its own
//! MFA is trusted), and the `acr_values` the app asked for. Pure.

use crate::config::UpstreamConfig;
use crate::domain::auth::{SECOND_FACTOR_AMR, acr_level};
use crate::domain::policy::MfaRequirement;

/// Whether `acr_values` (space separated, most preferred first) asks for more than `level`:
/// the session satisfies the request when any value it names that the broker knows is at or
/// below the session's level (OIDC Core 3.1.2.1: the values are preferences).
pub fn acr_values_need_more(acr_values: Option<&str>, level: u8) -> bool {
    let known: Vec<u8> = acr_values
        .unwrap_or("")
        .split_whitespace()
        .filter_map(acr_level)
        .collect();
    !known.is_empty() && known.iter().all(|l| *l > level)
}

/// What the policy asks of this sign-in.
pub fn requirement(
    default: MfaRequirement,
    client: Option<MfaRequirement>,
    upstream: Option<&UpstreamConfig>,
    acr_values: Option<&str>,
) -> MfaRequirement {
    let mut r = client.unwrap_or(default);
    if let Some(u) = upstream.and_then(|u| u.mfa) {
        r = r.max(u);
    }
    if acr_values_need_more(acr_values, 1) {
        r = MfaRequirement::Required;
    }
    r
}

/// Whether the upstream already did a second factor the operator trusts (its `amr`, or its
/// `acr` among the configured values).
pub fn upstream_mfa_trusted(
    upstream: Option<&UpstreamConfig>,
    amr: &[String],
    acr: Option<&str>,
) -> bool {
    let Some(u) = upstream.filter(|u| u.trust_upstream_mfa) else {
        return false;
    };
    amr.iter().any(|m| SECOND_FACTOR_AMR.contains(&m.as_str()))
        || acr.is_some_and(|a| u.mfa_acr_values.iter().any(|v| v == a))
}

/// `amr` plus `extra`, without repeats, in order.
pub fn merge_amr(amr: &[String], extra: &[String]) -> Vec<String> {
    let mut out = amr.to_vec();
    for m in extra {
        if !out.contains(m) {
            out.push(m.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::auth::{ACR_LOA1, ACR_LOA2, session_level};
    use MfaRequirement::*;

    fn upstream(mfa: Option<MfaRequirement>, trust: bool) -> UpstreamConfig {
        UpstreamConfig {
            id: "corp".into(),
            name: None,
            link_by_verified_email: false,
            domains: vec![],
            mfa,
            trust_upstream_mfa: trust,
            mfa_acr_values: vec!["http://schemas.microsoft.com/claims/multipleauthn".into()],
            kind: crate::config::UpstreamKind::Oidc(crate::config::OidcUpstreamConfig {
                issuer: "https://idp.example".into(),
                client_id: "c".into(),
                client_secret: "s".into(),
                scopes: vec![],
                claims: Default::default(),
                client_auth: Default::default(),
            }),
        }
    }

    #[test]
    fn client_overrides_the_default_and_upstreams_raise_it() {
        assert_eq!(requirement(Off, None, None, None), Off);
        assert_eq!(requirement(Required, Some(Off), None, None), Off);
        assert_eq!(requirement(Off, Some(Optional), None, None), Optional);
        let u = upstream(Some(Required), false);
        assert_eq!(requirement(Off, Some(Off), Some(&u), None), Required);
        assert_eq!(requirement(Off, None, None, Some(ACR_LOA2)), Required);
        assert_eq!(requirement(Off, None, None, Some("urn:other")), Off);
    }

    #[test]
    fn acr_values_are_preferences() {
        assert!(acr_values_need_more(Some(ACR_LOA2), 1));
        assert!(!acr_values_need_more(Some(ACR_LOA2), 2));
        assert!(!acr_values_need_more(
            Some(&format!("{ACR_LOA2} {ACR_LOA1}")),
            1
        ));
        assert!(!acr_values_need_more(None, 1));
        assert!(!acr_values_need_more(Some("urn:unknown"), 1));
    }

    #[test]
    fn upstream_mfa_counts_only_when_trusted() {
        let amr = vec!["pwd".to_owned(), "otp".to_owned()];
        assert!(!upstream_mfa_trusted(
            Some(&upstream(None, false)),
            &amr,
            None
        ));
        assert!(upstream_mfa_trusted(
            Some(&upstream(None, true)),
            &amr,
            None
        ));
        let pwd = vec!["pwd".to_owned()];
        assert!(!upstream_mfa_trusted(
            Some(&upstream(None, true)),
            &pwd,
            None
        ));
        assert!(upstream_mfa_trusted(
            Some(&upstream(None, true)),
            &pwd,
            Some("http://schemas.microsoft.com/claims/multipleauthn")
        ));
        assert!(!upstream_mfa_trusted(None, &amr, None));
    }

    #[test]
    fn session_levels() {
        assert_eq!(session_level(&["pwd".into()]), 1);
        assert_eq!(
            session_level(&merge_amr(&["pwd".into()], &["otp".into(), "mfa".into()])),
            2
        );
    }
}
