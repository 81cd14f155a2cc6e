//! Owns the broker's HTTP requests to other parties (upstream discovery, JWKS, token and
//! userinfo endpoints, SAML metadata, back-channel logout to apps): one client builder (no redirects, timeouts, the trust
//! anchors) and response bodies read with a size cap, refused before they are buffered whole.

use std::time::Duration;

use crate::config::http::TrustAnchors;

/// The most the broker reads of an upstream's discovery document, JWKS, token or userinfo
/// response.
pub const MAX_RESPONSE: usize = 64 * 1024;

/// A client for requests to other parties: redirects are never followed (SSRF, token leakage),
/// every request ends within `timeout`, https peers are checked against the bundled public
/// roots, the system store and `trust`.
pub fn client(timeout: Duration, trust: &TrustAnchors) -> Result<reqwest::Client, reqwest::Error> {
    builder(trust).timeout(timeout).build()
}

/// The builder behind [`client`]: no redirects, the trust anchors; no timeout yet.
pub fn builder(trust: &TrustAnchors) -> reqwest::ClientBuilder {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .tls_built_in_root_certs(true)
        .tls_built_in_native_certs(true);
    for cert in trust.extra() {
        builder = builder.add_root_certificate(cert.clone());
    }
    builder
}

/// Why a response body was not read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the response is larger than {0} bytes")]
    TooLarge(usize),
    #[error("{}", describe(.0))]
    Transport(#[from] reqwest::Error),
}

/// Reads a response body of at most `cap` bytes: a larger `Content-Length` is refused without
/// reading, and a body without one is refused as soon as it passes the cap.
pub async fn read_capped(mut res: reqwest::Response, cap: usize) -> Result<Vec<u8>, ReadError> {
    if res
        .content_length()
        .is_some_and(|n| n > u64::try_from(cap).unwrap_or(u64::MAX))
    {
        return Err(ReadError::TooLarge(cap));
    }
    let mut body = Vec::new();
    while let Some(chunk) = res.chunk().await? {
        if body.len() + chunk.len() > cap {
            return Err(ReadError::TooLarge(cap));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A transport error with its causes (reqwest's own message says little), saying so when the
/// cause is the peer's TLS certificate.
pub fn describe(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    let mut certificate = false;
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        let lower = text.to_ascii_lowercase();
        certificate |= lower.contains("certificate") || lower.contains("unknownissuer");
        source = s.source();
    }
    if certificate {
        format!(
            "TLS certificate problem (is the issuing CA in [http] ca_file or the system store?): {out}"
        )
    } else {
        out
    }
}
