//! Owns `[http]` parsed: the certificate authorities the broker's outbound HTTPS trusts besides
//! the public roots (the client that uses them is built by the top-level `http` module).

/// The certificate authorities https peers are checked against, besides the bundled public
/// roots (webpki-roots) and the system store: the PEM bundle of `[http] ca_file`.
#[derive(Clone, Default)]
pub struct TrustAnchors {
    extra: Vec<reqwest::Certificate>,
}

impl std::fmt::Debug for TrustAnchors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TrustAnchors({} extra CA)", self.extra.len())
    }
}

impl TrustAnchors {
    /// The certificates of a PEM bundle; at least one.
    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let extra = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| e.to_string())?;
        if extra.is_empty() {
            return Err("holds no PEM certificate".into());
        }
        Ok(Self { extra })
    }

    /// The certificates besides the public roots and the system store.
    pub fn extra(&self) -> &[reqwest::Certificate] {
        &self.extra
    }
}
