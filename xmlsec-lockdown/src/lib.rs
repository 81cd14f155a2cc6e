//! Owns every call into libxmlsec1: the process-wide lockdown ([`lock_down`]: xmlsec opens no
//! URI and knows only the SAML profile's transforms) and the calls that use it, [`verify`],
//! [`sign`] and [`sign_with`] (a [`SigningKey`] loaded once), the only way the workspace reaches
//! XML-DSig (clippy `disallowed-methods`; the broker reaches them only through
//! `upstream/saml/dsig.rs`, after its pre-check).
//!
//! The one crate of the workspace with `unsafe` (ADR 7): samael, which links libxmlsec1, exposes
//! no setting for any of this, nor a key that outlives one signature, so the switches are flipped
//! and the loaded key kept here through libxmlsec1's own C API.

use std::cell::Cell;
use std::ffi::{CStr, c_char, c_int, c_uint, c_void};
use std::fmt;
use std::ptr::{self, NonNull};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use samael::crypto::{
    AllowedSignatureAlgorithm, CertificateDer, Crypto, CryptoProvider, ReduceMode,
};

/// Why the lockdown could not be applied; the caller must then refuse to verify anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockdownError {
    /// samael did not initialise libxmlsec1, so there is nothing to restrict yet, and a later
    /// initialisation would register the default URI handlers again.
    #[error("libxmlsec1 is not initialised")]
    NotInitialised,
    /// The libxmlsec1 loaded at run time is not ABI compatible with the 1.2 headers this crate
    /// was checked against at build time (`build.rs`).
    #[error("libxmlsec1 at run time is not compatible with {0}, the version built against")]
    Version(&'static str),
    /// A transform of the allow-list is not registered (or xmlsec's transform classes are not
    /// laid out as this crate assumes): nothing would verify, so nothing is allowed to.
    #[error("libxmlsec1 lacks the transforms {0:?}")]
    Transforms(Vec<&'static str>),
    /// xmlsec's transform list could not be rebuilt.
    #[error("libxmlsec1's transform list could not be restricted")]
    List,
}

/// Why [`verify`] or [`sign`] did not give a result.
#[derive(Debug, thiserror::Error)]
pub enum XmlsecError {
    #[error("xmlsec lockdown: {0}")]
    Lockdown(#[from] LockdownError),
    /// libxml2, without recovery, does not read the document as well-formed XML.
    #[error("the document is not well-formed XML")]
    NotWellFormed,
    #[error("no valid signature: {0}")]
    Invalid(String),
    #[error("signing failed: {0}")]
    Sign(String),
    /// libxmlsec1 did not load the private key (not a DER private key it reads).
    #[error("the signing key could not be loaded")]
    Key,
}

/// The version of libxmlsec1 `build.rs` found (pkg-config) and checked the FFI against.
pub const BUILT_WITH: &str = env!("XMLSEC_LOCKDOWN_VERSION");

/// `xmlSecSize` of xmlsec 1.2: `unsigned int` when built with `XMLSEC_NO_SIZE_T`, which Debian's
/// libxmlsec1 1.2.37 is (`build.rs` checks `pkg-config --cflags xmlsec1`).
type XmlSecSize = c_uint;

/// The first fields of xmlsec 1.2's `struct _xmlSecTransformKlass` (transforms.h), all this
/// crate reads. The layout is checked at run time too: the allow-list's classes must be found
/// with their known names.
#[repr(C)]
struct TransformKlassHead {
    klass_size: XmlSecSize,
    obj_size: XmlSecSize,
    name: *const c_char,
    href: *const c_char,
}

// libxmlsec1 is already on the link line (samael links it through pkg-config); naming it here
// keeps this crate correct on its own.
#[link(name = "xmlsec1")]
unsafe extern "C" {
    /// io.h: empties xmlsec's list of input callbacks (the file, http and ftp handlers
    /// `xmlSecInit` registers). `xmlSecTransformInputURIOpen`, the one place xmlsec opens a
    /// `ds:Reference` or `RetrievalMethod` URI that is not `#...`, looks a handler up in that list
    /// only, so with the list empty every such URI fails before anything is opened.
    fn xmlSecIOCleanupCallbacks();
    /// transforms.h: the global list of registered transforms (a static `xmlSecPtrList`), the
    /// one `xmlSecTransformNodeRead` looks every `Algorithm` URI of a document up in.
    fn xmlSecTransformIdsGet() -> *mut c_void;
    /// list.h: the number of items of a list; 0 for a list that was never initialised.
    fn xmlSecPtrListGetSize(list: *mut c_void) -> XmlSecSize;
    /// list.h: the item at `pos` (null past the end).
    fn xmlSecPtrListGetItem(list: *mut c_void, pos: XmlSecSize) -> *mut c_void;
    /// list.h: removes every item (the transform id list has no item destructor: the ids are
    /// static classes).
    fn xmlSecPtrListEmpty(list: *mut c_void);
    /// list.h: appends an item; 0 on success.
    fn xmlSecPtrListAdd(list: *mut c_void, item: *mut c_void) -> c_int;
    /// xmlsec.h: 1 when the library is compatible with the given version (mode 1: ABI
    /// compatible, the library is that version or a later one of the same major and minor).
    fn xmlSecCheckVersionExt(major: c_int, minor: c_int, subminor: c_int, mode: c_int) -> c_int;
}

/// The transforms xmlsec keeps after the lockdown, by `Algorithm` URI and xmlsec's own name for
/// them: exclusive c14n without comments, enveloped signature, SHA-2 digests, RSA and ECDSA
/// with SHA-2 (the SAML profile the broker's pre-check enforces, ADR 7). Nothing else (XSLT,
/// XPath, XPath Filter 2, XPointer by `Algorithm`, inclusive c14n, base64, SHA-1, HMAC...) can be
/// named by a document, even one the pre-check let through by mistake.
pub const ALLOWED_TRANSFORMS: &[(&str, &str)] = &[
    ("http://www.w3.org/2001/10/xml-exc-c14n#", "exc-c14n"),
    (
        "http://www.w3.org/2000/09/xmldsig#enveloped-signature",
        "enveloped-signature",
    ),
    ("http://www.w3.org/2001/04/xmlenc#sha256", "sha256"),
    ("http://www.w3.org/2001/04/xmldsig-more#sha384", "sha384"),
    ("http://www.w3.org/2001/04/xmlenc#sha512", "sha512"),
    (
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
        "rsa-sha256",
    ),
    (
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384",
        "rsa-sha384",
    ),
    (
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512",
        "rsa-sha512",
    ),
    (
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
        "ecdsa-sha256",
    ),
    (
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384",
        "ecdsa-sha384",
    ),
    (
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512",
        "ecdsa-sha512",
    ),
];

static LOCKDOWN: OnceLock<Result<(), LockdownError>> = OnceLock::new();
static CALLS: AtomicU64 = AtomicU64::new(0);
thread_local! {
    static THREAD_CALLS: Cell<u64> = const { Cell::new(0) };
}

/// Initialises libxmlsec1 through samael (if samael has not yet) and restricts it for the rest
/// of the process: every URI handler is removed (a `ds:Reference URI="file:..."` or
/// `"http://..."` fails to dereference, so its signature does not verify, and nothing is read
/// or connected to; `#id` references are untouched), and the global transform list is cut down
/// to [`ALLOWED_TRANSFORMS`] (any other `Algorithm` is unknown to xmlsec, so the signature fails
/// before that transform could run).
///
/// Idempotent and cheap after the first call (one atomic load). Irreversible: samael never
/// shuts xmlsec down nor initialises it twice, so nothing registers handlers or transforms again.
///
/// Call it from `main()` before any thread is started, and again (a no-op) before every
/// verification: xmlsec's lists are not locked, so the first call must not overlap an xmlsec
/// operation on another thread that did not itself call this first (concurrent callers wait for
/// the first call to finish).
pub fn lock_down() -> Result<(), LockdownError> {
    LOCKDOWN.get_or_init(apply).clone()
}

fn apply() -> Result<(), LockdownError> {
    let sub: c_int = BUILT_WITH
        .rsplit('.')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(c_int::MAX);
    // SAFETY: plain integers in, an integer out; reads libxmlsec1's compiled-in version.
    if unsafe { xmlSecCheckVersionExt(1, 2, sub, 1) } != 1 {
        return Err(LockdownError::Version(BUILT_WITH));
    }
    initialise_through_samael();
    // SAFETY: `xmlSecTransformIdsGet` takes no argument and returns the address of a static
    // list inside libxmlsec1 (never null, valid for the life of the process);
    // `xmlSecPtrListGetSize` only reads that list (it checks the list is valid and returns 0 if
    // it was never initialised). No Rust memory is involved.
    let list = unsafe { xmlSecTransformIdsGet() };
    // SAFETY: as above.
    let registered = unsafe { xmlSecPtrListGetSize(list) };
    if registered == 0 {
        return Err(LockdownError::NotInitialised);
    }
    let mut keep: Vec<Option<*mut c_void>> = vec![None; ALLOWED_TRANSFORMS.len()];
    for pos in 0..registered {
        // SAFETY: `pos` is below the list's size, read just above; the item is a transform
        // class (`xmlSecTransformId`), a static struct of libxmlsec1 or its crypto backend.
        let item = unsafe { xmlSecPtrListGetItem(list, pos) };
        if item.is_null() {
            continue;
        }
        // SAFETY: a non-null item of the transform id list points to a `xmlSecTransformKlass`
        // whose first fields are `TransformKlassHead` (xmlsec 1.2 with XMLSEC_NO_SIZE_T, checked
        // by build.rs and by the version check above); its strings are static, NUL-terminated
        // or null.
        let (name, href) = unsafe {
            let head = &*(item as *const TransformKlassHead);
            (c_str(head.name), c_str(head.href))
        };
        if let Some(at) = ALLOWED_TRANSFORMS
            .iter()
            .position(|(h, n)| Some(*h) == href.as_deref() && Some(*n) == name.as_deref())
            && keep[at].is_none()
        {
            keep[at] = Some(item);
        }
    }
    let missing: Vec<&'static str> = ALLOWED_TRANSFORMS
        .iter()
        .zip(&keep)
        .filter(|(_, k)| k.is_none())
        .map(|((h, _), _)| *h)
        .collect();
    if !missing.is_empty() {
        return Err(LockdownError::Transforms(missing));
    }
    // SAFETY: no arguments; it empties a static list of libxmlsec1 that `xmlSecInit` set up
    // (checked above). Its precondition, that no xmlsec operation on another thread reads the
    // list meanwhile, is this function's documented contract: it runs once (`OnceLock`), before
    // the first verification, and every caller that verifies waits for it.
    unsafe { xmlSecIOCleanupCallbacks() };
    // SAFETY: the list is the transform id list checked above; emptying it frees nothing (ids
    // are static) and adding back the ids read from it keeps them valid. Same contract as above:
    // no other thread uses xmlsec meanwhile.
    unsafe {
        xmlSecPtrListEmpty(list);
        for item in keep.into_iter().flatten() {
            if xmlSecPtrListAdd(list, item) != 0 {
                return Err(LockdownError::List);
            }
        }
    }
    Ok(())
}

/// # Safety
/// `p` is null or points to a NUL-terminated string that outlives the call.
unsafe fn c_str(p: *const c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null and NUL-terminated (the caller's contract).
    Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// The transforms libxmlsec1 knows now, by `Algorithm` URI (those with one): after
/// [`lock_down`], exactly [`ALLOWED_TRANSFORMS`].
pub fn registered_transforms() -> Vec<String> {
    // SAFETY: as in `apply`: a static list, read only, its items static classes.
    unsafe {
        let list = xmlSecTransformIdsGet();
        (0..xmlSecPtrListGetSize(list))
            .map(|pos| xmlSecPtrListGetItem(list, pos))
            .filter(|item| !item.is_null())
            .filter_map(|item| c_str((*(item as *const TransformKlassHead)).href))
            .collect()
    }
}

/// How many times [`verify`] and [`sign`] reached xmlsec, in the whole process.
pub fn calls() -> u64 {
    CALLS.load(Ordering::Relaxed)
}

/// How many times [`verify`] and [`sign`] reached xmlsec on the calling thread.
pub fn calls_on_this_thread() -> u64 {
    THREAD_CALLS.with(Cell::get)
}

fn count() {
    CALLS.fetch_add(1, Ordering::Relaxed);
    THREAD_CALLS.with(|c| c.set(c.get() + 1));
}

/// libxml2 without recovery and without network access reads `xml` as well-formed. samael parses
/// with libxml2's recovery on (not configurable), which for a well-formed document builds the
/// same tree: so only documents both readings agree on reach it.
fn well_formed(xml: &str) -> Result<(), XmlsecError> {
    parse_strict(xml).map(drop)
}

/// The document [`well_formed`] reads. [`sign_with`] signs this very tree: for a well-formed
/// document it is the tree samael's recovering parse builds (the test
/// `a_loaded_key_signs_as_sign_does` compares the outputs byte for byte).
fn parse_strict(xml: &str) -> Result<libxml::tree::Document, XmlsecError> {
    let options = libxml::parser::ParserOptions {
        recover: false,
        no_net: true,
        no_error: true,
        no_warning: true,
        ..Default::default()
    };
    libxml::parser::Parser::default()
        .parse_string_with_options(xml, options)
        .map_err(|_| XmlsecError::NotWellFormed)
}

/// Verifies every `ds:Signature` of `xml` against `certs` with xmlsec (locked down first) and
/// returns xmlsec's pre-digest of the one verified reference: the canonical bytes that were
/// hashed. Callers must have checked the signature profile first (the broker:
/// `upstream/saml/dsig.rs`, the only caller).
#[allow(clippy::disallowed_methods)] // the one call of samael's verification
pub fn verify(
    xml: &str,
    certs: &[CertificateDer],
    algorithms: &[AllowedSignatureAlgorithm],
) -> Result<String, XmlsecError> {
    lock_down()?;
    well_formed(xml)?;
    count();
    Crypto::reduce_xml_to_signed_with_allowed_algorithms(
        xml,
        certs,
        ReduceMode::PreDigest,
        Some(algorithms),
    )
    .map_err(|e| XmlsecError::Invalid(e.to_string()))
}

/// Signs the signature template(s) of `xml` with `private_key_der` (xmlsec, locked down first:
/// only the allow-listed transforms can be named), `ID` attributes being the references' targets.
#[allow(clippy::disallowed_methods)] // the one call of samael's signing
pub fn sign(xml: &str, private_key_der: &[u8]) -> Result<String, XmlsecError> {
    lock_down()?;
    well_formed(xml)?;
    count();
    Crypto::sign_xml(xml, private_key_der).map_err(|e| XmlsecError::Sign(e.to_string()))
}

/// The declarations `build.rs` generates with bindgen from the installed headers (`ffi.h`,
/// allow-listed there): `xmlSecDSigCtx` for its layout, with bindgen's compile-time layout
/// assertions, and the key and signing functions [`SigningKey`] and [`sign_with`] call.
#[allow(
    dead_code,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    unsafe_op_in_unsafe_fn,
    clippy::all,
    clippy::pedantic,
    clippy::undocumented_unsafe_blocks,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]
mod ffi {
    include!(concat!(env!("OUT_DIR"), "/ffi.rs"));
}

/// A private key loaded into libxmlsec1 once (the OpenSSL `EVP_PKEY` decoded from DER, with
/// the RSA blinding OpenSSL sets up at its first use), to sign any number of documents with
/// [`sign_with`]: loading a key costs as much as the rest of a signature (OpenSSL 3's decoder,
/// then new blinding values; BENCHMARKS.md, issue #20). `Debug` shows nothing of it.
pub struct SigningKey {
    /// An `xmlSecKey` owned by this value (destroyed on drop), never changed after the load:
    /// every signature works on a duplicate of it.
    key: NonNull<ffi::xmlSecKey>,
}

// SAFETY: the `xmlSecKey` is owned by this value alone (no other pointer to it exists), so moving
// it to another thread and destroying it there is sound: libxmlsec1 keeps no thread-affine state
// in a key, and `xmlSecKeyDestroy` frees it with `xmlFree` and `EVP_PKEY_free` (both callable
// from any thread).
unsafe impl Send for SigningKey {}

// SAFETY: through `&SigningKey` the key is only ever passed to `xmlSecKeyDuplicate`, which reads
// it and writes nothing in it. In libxmlsec1 1.2.37 (src/keys.c, src/openssl/evp.c; the
// installed libxmlsec1-openssl calls `EVP_PKEY_up_ref` in `xmlSecOpenSSLEvpKeyDup`, checked with
// objdump) `xmlSecKeyCopy` reads `name`, `value`, `dataList`, `usage` and the validity times of
// the source and duplicates `value` through `xmlSecOpenSSLEvpKeyDataDuplicate`, whose only effect
// on the source is `EVP_PKEY_up_ref`, an atomic increment. The signatures then use the one
// shared `EVP_PKEY` from several threads at once, each through its own `EVP_PKEY_CTX`
// (`EVP_PKEY_CTX_new_from_pkey` in src/openssl/signatures.c): OpenSSL 3 allows concurrent use of
// an `EVP_PKEY` that is not modified (openssl-threads(7)); RSA blinding is guarded by the key's
// own lock (`rsa_get_blinding`).
unsafe impl Sync for SigningKey {}

impl SigningKey {
    /// Loads `private_key_der` (PKCS#1, SEC1 or PKCS#8 DER, as samael's `sign_xml` takes it)
    /// the way samael does (`xmlSecOpenSSLAppKeyLoadMemory`), after [`lock_down`] (which
    /// initialises libxmlsec1 through samael first).
    pub fn from_der(private_key_der: &[u8]) -> Result<Self, XmlsecError> {
        lock_down()?;
        let size = XmlSecSize::try_from(private_key_der.len()).map_err(|_| XmlsecError::Key)?;
        // SAFETY: the buffer is `size` readable bytes that outlive the call (libxmlsec1 copies
        // what it keeps into the new key); no password and no password callback (null), which
        // is what samael passes; libxmlsec1 is initialised (`lock_down` above succeeded, which
        // needs samael's initialisation). A null result is a failed load, handled below.
        let key = unsafe {
            ffi::xmlSecOpenSSLAppKeyLoadMemory(
                private_key_der.as_ptr(),
                size,
                ffi::xmlSecKeyDataFormat_xmlSecKeyDataFormatDer,
                ptr::null(),
                ptr::null_mut(),
                ptr::null_mut(),
            )
        };
        NonNull::new(key)
            .map(|key| Self { key })
            .ok_or(XmlsecError::Key)
    }
}

impl Drop for SigningKey {
    fn drop(&mut self) {
        // SAFETY: the key was created by `xmlSecOpenSSLAppKeyLoadMemory`, is owned by this value
        // and destroyed only here; signatures hold their own duplicates (their own reference to
        // the `EVP_PKEY`), and none is in progress with this key (`&self` borrows have ended).
        unsafe { ffi::xmlSecKeyDestroy(self.key.as_ptr()) };
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

/// An `xmlSecDSigCtx` destroyed on drop, with the key it was given.
struct DSigCtx(NonNull<ffi::xmlSecDSigCtx>);

impl DSigCtx {
    /// A context without keys manager (as samael makes it) whose `signKey` is a duplicate of
    /// `key`, owned by the context.
    fn new(key: &SigningKey) -> Result<Self, XmlsecError> {
        // SAFETY: a null keys manager is allowed (the key is set directly below); the result is
        // checked for null.
        let ctx = NonNull::new(unsafe { ffi::xmlSecDSigCtxCreate(ptr::null_mut()) })
            .map(Self)
            .ok_or_else(|| XmlsecError::Sign("no signature context".into()))?;
        // SAFETY: `key.key` is a valid key for as long as `key` is borrowed; duplicating it only
        // reads it (see `impl Sync for SigningKey`). The duplicate is new and ours.
        let dup = unsafe { ffi::xmlSecKeyDuplicate(key.key.as_ptr()) };
        if dup.is_null() {
            return Err(XmlsecError::Sign("the key could not be duplicated".into()));
        }
        // SAFETY: `ctx.0` is the live context created above, used by this thread only; its
        // `signKey` is null after creation, and the context now owns `dup`
        // (`xmlSecDSigCtxFinalize` destroys `signKey`), exactly as samael's `insert_key` hands
        // its key over. The field's offset comes from bindgen on the installed header.
        unsafe { (*ctx.0.as_ptr()).signKey = dup };
        Ok(ctx)
    }
}

impl Drop for DSigCtx {
    fn drop(&mut self) {
        // SAFETY: created by `xmlSecDSigCtxCreate`, destroyed once, here; it frees the key
        // duplicate and the transforms (each holds its own `EVP_PKEY` reference).
        unsafe { ffi::xmlSecDSigCtxDestroy(self.0.as_ptr()) };
    }
}

/// Signs the first signature template of `xml` with `key` as [`sign`] does with the key's DER
/// (same parse result, same ID registration, same context, the same output byte for byte), but
/// with a duplicate of the key loaded once (`xmlSecKeyDuplicate` shares the `EVP_PKEY`: no new
/// decoding and no new RSA blinding). [`lock_down`] and the strict parse first; the document
/// signed is the strictly parsed tree.
pub fn sign_with(xml: &str, key: &SigningKey) -> Result<String, XmlsecError> {
    lock_down()?;
    let doc = parse_strict(xml)?;
    count();
    let root = doc
        .get_root_element()
        .ok_or_else(|| XmlsecError::Sign("no root element".into()))?;
    let doc_ptr = doc.doc_ptr().cast::<ffi::xmlDoc>();
    let root_ptr = root.node_ptr().cast::<ffi::xmlNode>();
    let mut ids = [c"ID".as_ptr().cast::<ffi::xmlChar>(), ptr::null()];
    // SAFETY: `doc_ptr` and `root_ptr` are the document `doc` owns and its root element, alive
    // while `doc` and `root` are; `ids` is a null-terminated array of NUL-terminated strings
    // that outlive the call and are only read. It registers every `ID` attribute of the tree in
    // the document's ID table (samael's `sign_document` makes the same call).
    unsafe { ffi::xmlSecAddIDs(doc_ptr, root_ptr, ids.as_mut_ptr()) };
    // SAFETY: `root_ptr` as above; the name and namespace are NUL-terminated literals (the
    // values of xmlsec's `xmlSecNodeSignature` and `xmlSecDSigNs`). Returns a node of the tree
    // or null.
    let node = unsafe {
        ffi::xmlSecFindNode(
            root_ptr,
            c"Signature".as_ptr().cast(),
            c"http://www.w3.org/2000/09/xmldsig#".as_ptr().cast(),
        )
    };
    if node.is_null() {
        return Err(XmlsecError::Sign("no ds:Signature template".into()));
    }
    let ctx = DSigCtx::new(key)?;
    // SAFETY: `ctx` is a live context with its key set, used by this thread only; `node` is a
    // `ds:Signature` element of the live document (`doc` is neither changed nor dropped while
    // xmlsec writes the digest and signature values into it).
    let rc = unsafe { ffi::xmlSecDSigCtxSign(ctx.0.as_ptr(), node) };
    drop(ctx);
    if rc < 0 {
        return Err(XmlsecError::Sign(
            "xmlsec could not sign the template".into(),
        ));
    }
    Ok(doc.to_string())
}

/// samael initialises libxmlsec1 lazily, under its own lock, the first time it loads a key
/// (`guarantee_xmlsec_init`), and keeps it initialised for the life of the process. Verifying a
/// document that has no signature does exactly that: the key is loaded (which initialises
/// xmlsec), then no `ds:Signature` is found and nothing else happens. The certificate is a
/// throwaway one (its private key was never kept); a certificate that fails to load would
/// initialise xmlsec too, but xmlsec would print its load errors at every start.
#[allow(clippy::disallowed_methods)] // no signature: initialises xmlsec, verifies nothing
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
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;

    #[test]
    fn the_lockdown_initialises_xmlsec_and_keeps_only_the_allow_list() {
        assert_eq!(lock_down(), Ok(()));
        assert_eq!(lock_down(), Ok(()));
        let mut left = registered_transforms();
        left.sort();
        let mut want: Vec<String> = ALLOWED_TRANSFORMS
            .iter()
            .map(|(h, _)| (*h).to_owned())
            .collect();
        want.sort();
        assert_eq!(left, want);
    }

    #[test]
    fn documents_libxml2_would_have_to_recover_are_refused() {
        assert!(matches!(
            verify("<a><b></a>", &[], &[]),
            Err(XmlsecError::NotWellFormed)
        ));
        assert!(matches!(
            verify("<a x=\"1\" x=\"2\"/>", &[], &[]),
            Err(XmlsecError::NotWellFormed)
        ));
    }
    use openssl::asn1::Asn1Time;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::{PKey, Private};
    use openssl::rsa::Rsa;
    use openssl::x509::{X509, X509NameBuilder};

    fn cert(key: &PKey<Private>) -> CertificateDer {
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "idp").unwrap();
        let name = name.build();
        let mut cert = X509::builder().unwrap();
        cert.set_version(2).unwrap();
        cert.set_subject_name(&name).unwrap();
        cert.set_issuer_name(&name).unwrap();
        cert.set_pubkey(key).unwrap();
        cert.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        cert.set_not_after(&Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        cert.sign(key, MessageDigest::sha256()).unwrap();
        CertificateDer::from(cert.build().to_der().unwrap())
    }

    /// A SAML-like document whose root `id` carries an enveloped signature template.
    fn template(id: &str, method: &str) -> String {
        format!(
            concat!(
                r#"<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" ID="{id}" Version="2.0">"#,
                r#"<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo>"#,
                r#"<ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>"#,
                r#"<ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#{method}"/>"#,
                r##"<ds:Reference URI="#{id}"><ds:Transforms>"##,
                r#"<ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>"#,
                r#"<ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/></ds:Transforms>"#,
                r#"<ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/>"#,
                r#"<ds:DigestValue></ds:DigestValue></ds:Reference></ds:SignedInfo>"#,
                r#"<ds:SignatureValue></ds:SignatureValue></ds:Signature>"#,
                "<samlp:Status>caf\u{e9} &amp; <![CDATA[x]]></samlp:Status></samlp:Response>"
            ),
            id = id,
            method = method,
        )
    }

    const ALL: &[AllowedSignatureAlgorithm] = &[
        AllowedSignatureAlgorithm::RsaSha256,
        AllowedSignatureAlgorithm::EcdsaSha256,
    ];

    #[test]
    fn a_loaded_key_signs_as_sign_does() {
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let der = key.private_key_to_der().unwrap();
        let loaded = SigningKey::from_der(&der).unwrap();
        let cert = cert(&key);
        for n in 0..3 {
            let id = format!("_r{n}");
            let xml = template(&id, "rsa-sha256");
            let before = calls_on_this_thread();
            let kept = sign_with(&xml, &loaded).unwrap();
            assert_eq!(calls_on_this_thread(), before + 1);
            let fresh = sign(&xml, &der).unwrap();
            // RSA PKCS#1 v1.5 is deterministic: the same key gives the same bytes.
            assert_eq!(kept, fresh);
            assert!(!kept.contains("<ds:SignatureValue></ds:SignatureValue>"));
            let digested = verify(&kept, std::slice::from_ref(&cert), ALL).unwrap();
            assert!(digested.starts_with("<samlp:Response"), "{digested}");
        }
    }

    #[test]
    fn a_loaded_ecdsa_key_signs_what_verifies() {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        let loaded = SigningKey::from_der(&key.private_key_to_der().unwrap()).unwrap();
        let signed = sign_with(&template("_e", "ecdsa-sha256"), &loaded).unwrap();
        verify(&signed, &[cert(&key)], ALL).unwrap();
        let other = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        assert!(verify(&signed, &[cert(&other)], ALL).is_err());
    }

    #[test]
    fn one_loaded_key_signs_on_many_threads_at_once() {
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let der = key.private_key_to_der().unwrap();
        let loaded = std::sync::Arc::new(SigningKey::from_der(&der).unwrap());
        let cert = cert(&key);
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let loaded = std::sync::Arc::clone(&loaded);
                std::thread::spawn(move || {
                    (0..25)
                        .map(|n| {
                            let xml = template(&format!("_t{t}n{n}"), "rsa-sha256");
                            (sign_with(&xml, &loaded).unwrap(), xml)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for t in threads {
            for (signed, xml) in t.join().unwrap() {
                assert_eq!(signed, sign(&xml, &der).unwrap());
                verify(&signed, std::slice::from_ref(&cert), ALL).unwrap();
            }
        }
        // The last reference is dropped on this thread: the key is destroyed here.
        drop(loaded);
    }

    #[test]
    fn a_key_that_does_not_load_and_a_document_without_template_are_refused() {
        assert!(matches!(
            SigningKey::from_der(b"not a key"),
            Err(XmlsecError::Key)
        ));
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let loaded = SigningKey::from_der(&key.private_key_to_der().unwrap()).unwrap();
        assert_eq!(format!("{loaded:?}"), "SigningKey(<redacted>)");
        assert!(matches!(
            sign_with("<a><b></a>", &loaded),
            Err(XmlsecError::NotWellFormed)
        ));
        assert!(matches!(
            sign_with("<a ID=\"x\"/>", &loaded),
            Err(XmlsecError::Sign(_))
        ));
    }
}
