//! Owns the process-wide restriction of libxmlsec1: after [`forbid_external_references`] xmlsec
//! can open no URI at all (no file, no http, no ftp), so only same-document references resolve.
//!
//! The one crate of the workspace with `unsafe` (ADR 7): samael, which links libxmlsec1, exposes
//! no setting for this, so the switch is flipped here through libxmlsec1's own C API.

use std::ffi::{c_uint, c_void};
use std::sync::OnceLock;

use samael::crypto::{CertificateDer, Crypto, CryptoProvider};

/// Why the lockdown could not be applied; the caller must then refuse to verify anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockdownError {
    /// samael did not initialise libxmlsec1, so there is nothing to restrict yet, and a later
    /// initialisation would register the default URI handlers again.
    #[error("libxmlsec1 is not initialised")]
    NotInitialised,
}

/// `xmlSecSize` of xmlsec 1.2: `unsigned int` when built with `XMLSEC_NO_SIZE_T`, which Debian's
/// libxmlsec1 1.2.37 is (`pkg-config --cflags xmlsec1`).
type XmlSecSize = c_uint;

// libxmlsec1 is already on the link line (samael links it through pkg-config); naming it here
// keeps this crate correct on its own.
#[link(name = "xmlsec1")]
unsafe extern "C" {
    /// io.h: empties xmlsec's list of input callbacks (the file, http and ftp handlers
    /// `xmlSecInit` registers). `xmlSecTransformInputURIOpen`, the one place xmlsec opens a
    /// `ds:Reference` or `RetrievalMethod` URI that is not `#...`, looks a handler up in that list
    /// only, so with the list empty every such URI fails before anything is opened.
    fn xmlSecIOCleanupCallbacks();
    /// transforms.h: the global list of registered transforms (a static `xmlSecPtrList`).
    fn xmlSecTransformIdsGet() -> *mut c_void;
    /// list.h: the number of items of a list; 0 for a list that was never initialised.
    fn xmlSecPtrListGetSize(list: *mut c_void) -> XmlSecSize;
}

static LOCKDOWN: OnceLock<Result<(), LockdownError>> = OnceLock::new();

/// Initialises libxmlsec1 through samael (if samael has not yet) and removes every URI handler
/// xmlsec has, for the rest of the process: a `ds:Reference URI="file:..."` or `"http://..."`
/// then fails to dereference, so its signature does not verify, and nothing is read or
/// connected to. Same-document references (`URI="#id"`) are untouched.
///
/// Idempotent and cheap after the first call (one atomic load). Irreversible: samael never
/// shuts xmlsec down nor initialises it twice, so nothing registers the handlers again.
///
/// Call it before the first verification, from the code that verifies: xmlsec's lists are not
/// locked, so the first call must not overlap an xmlsec operation on another thread that did not
/// itself call this first (concurrent callers wait for the first call to finish).
pub fn forbid_external_references() -> Result<(), LockdownError> {
    LOCKDOWN.get_or_init(lock_down).clone()
}

fn lock_down() -> Result<(), LockdownError> {
    initialise_through_samael();
    // SAFETY: `xmlSecTransformIdsGet` takes no argument and returns the address of a static
    // list inside libxmlsec1 (never null, valid for the life of the process);
    // `xmlSecPtrListGetSize` only reads that list (it checks the list is valid and returns 0 if
    // it was never initialised). No Rust memory is involved.
    let registered = unsafe { xmlSecPtrListGetSize(xmlSecTransformIdsGet()) };
    if registered == 0 {
        return Err(LockdownError::NotInitialised);
    }
    // SAFETY: no arguments; it empties a static list of libxmlsec1 that `xmlSecInit` set up
    // (checked just above). Its precondition, that no xmlsec operation on another thread reads
    // the list meanwhile, is this function's documented contract: it runs once (`OnceLock`),
    // before the first verification, and every caller that verifies waits for it.
    unsafe { xmlSecIOCleanupCallbacks() };
    Ok(())
}

/// samael initialises libxmlsec1 lazily, under its own lock, the first time it loads a key
/// (`guarantee_xmlsec_init`), and keeps it initialised for the life of the process. Verifying a
/// document that has no signature does exactly that: the key is loaded (which initialises
/// xmlsec), then no `ds:Signature` is found and nothing else happens. The certificate is a
/// throwaway one (its private key was never kept); a certificate that fails to load would
/// initialise xmlsec too, but xmlsec would print its load errors at every start.
fn initialise_through_samael() {
    let der = openssl::x509::X509::from_pem(INITIALISATION_CERT.as_bytes())
        .and_then(|cert| cert.to_der())
        .unwrap_or_default();
    let _ = Crypto::verify_signed_xml("<a/>", &CertificateDer::from(der), None);
}

/// A self-signed P-256 certificate whose key was discarded when it was made; it signs nothing
/// and is trusted for nothing.
const INITIALISATION_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIB2DCCAX+gAwIBAgIUD5eaqQGRPLieDOJF2/3YhXI1hfwwCgYIKoZIzj0EAwIw
QTE/MD0GA1UEAww2eG1sc2VjLWxvY2tkb3duIGluaXRpYWxpc2F0aW9uIChubyBw
cml2YXRlIGtleSBleGlzdHMpMCAXDTI2MTIwMTIyNDIxOVoYDzIxMjYxMTA3MjI0
MjE5WjBBMT8wPQYDVQQDDDZ4bWxzZWMtbG9ja2Rvd24gaW5pdGlhbGlzYXRpb24g
KG5vIHByaXZhdGUga2V5IGV4aXN0cykwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNC
AAQrzoba9afc85Lkkn9jUIcSaGe912fW3dBEcwfPXA/Ke6Euw5NG+4F+cAx472Pg
Fbqi4W7PJkt3KrQV/zJhPRHto1MwUTAdBgNVHQ4EFgQUcpNxE2AJzn+RQYCXRAF7
xX7m1R0wHwYDVR0jBBgwFoAUcpNxE2AJzn+RQYCXRAF7xX7m1R0wDwYDVR0TAQH/
BAUwAwEB/zAKBggqhkjOPQQDAgNHADBEAiBqZNXmSPiv3w/yQRyHXyM2Kfmzeika
F1UJF5qXn7UPBgIgYHsXScdaDVgy3AshWF/0VXbGmQ4ezYYjvQGSmrEQumY=
-----END CERTIFICATE-----
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lockdown_initialises_xmlsec_and_is_idempotent() {
        assert_eq!(forbid_external_references(), Ok(()));
        assert_eq!(forbid_external_references(), Ok(()));
        // SAFETY: as in `lock_down`.
        let registered = unsafe { xmlSecPtrListGetSize(xmlSecTransformIdsGet()) };
        assert!(registered > 0);
    }
}
