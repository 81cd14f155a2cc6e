//! Checks, when the crate is built, that the libxmlsec1 it links is the one its FFI was written
//! for: a 1.2 release (1.3 changed `xmlSecSize` and the structures this crate reads) built with
//! `XMLSEC_NO_SIZE_T` (`xmlSecSize` is then `unsigned int`, as `src/lib.rs` declares it). The
//! version found is passed on to the crate, which checks the library loaded at run time
//! against it (`xmlSecCheckVersionExt`).
//!
//! Also generates, with bindgen from the installed headers (`ffi.h`), the few declarations
//! `SigningKey` and `sign_with` use: `xmlSecDSigCtx` (for the offset of its `signKey` field, with
//! bindgen's layout assertions), the key load, duplicate and destroy functions and the signing
//! calls. Nothing else is bound: the allow-list below is the whole surface.

use std::path::PathBuf;
use std::process::Command;

fn pkg_config(arg: &str) -> Result<String, String> {
    let out = Command::new("pkg-config")
        .args([arg, "xmlsec1"])
        .output()
        .map_err(|e| format!("xmlsec-lockdown: cannot run pkg-config: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "xmlsec-lockdown: pkg-config {arg} xmlsec1 failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn main() -> Result<(), String> {
    println!("cargo::rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo::rerun-if-changed=build.rs");
    let version = pkg_config("--modversion")?;
    let parts: Vec<u32> = version
        .split('.')
        .map(|p| p.parse::<u32>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("xmlsec-lockdown: unreadable libxmlsec1 version {version:?}"))?;
    match parts.as_slice() {
        [1, 2, sub, ..] if *sub >= 30 => {}
        _ => {
            return Err(format!(
                "xmlsec-lockdown: libxmlsec1 {version} found; its FFI is written for 1.2.30 to 1.2.x \
                 (1.3 changed xmlSecSize and the transform structures it reads)"
            ));
        }
    }
    let cflags = pkg_config("--cflags")?;
    if !cflags.split_whitespace().any(|f| f == "-DXMLSEC_NO_SIZE_T") {
        return Err(format!(
            "xmlsec-lockdown: libxmlsec1 {version} is not built with XMLSEC_NO_SIZE_T \
             (xmlSecSize would be size_t, the FFI declares unsigned int); cflags: {cflags}"
        ));
    }
    println!("cargo::rustc-env=XMLSEC_LOCKDOWN_VERSION={version}");
    bind(&cflags)
}

/// `$OUT_DIR/ffi.rs`: the allow-listed part of `ffi.h`, for Rust 2024 (`unsafe extern`).
fn bind(cflags: &str) -> Result<(), String> {
    println!("cargo::rerun-if-changed=ffi.h");
    // The OpenSSL backend's functions (`xmlSecOpenSSLAppKeyLoadMemory`); samael links it too.
    println!("cargo::rustc-link-lib=xmlsec1-openssl");
    let out =
        PathBuf::from(std::env::var_os("OUT_DIR").ok_or("xmlsec-lockdown: OUT_DIR is not set")?);
    let functions = [
        "xmlSecOpenSSLAppKeyLoadMemory",
        "xmlSecKeyDuplicate",
        "xmlSecKeyDestroy",
        "xmlSecDSigCtxCreate",
        "xmlSecDSigCtxDestroy",
        "xmlSecDSigCtxSign",
        "xmlSecAddIDs",
        "xmlSecFindNode",
    ];
    bindgen::Builder::default()
        .header("ffi.h")
        .clang_args(cflags.split_whitespace())
        .rust_edition(bindgen::RustEdition::Edition2024)
        .allowlist_type("xmlSecDSigCtx")
        .allowlist_type("xmlSecKey")
        .allowlist_type("xmlSecKeyDataFormat")
        .allowlist_function(functions.join("|"))
        .layout_tests(true)
        .generate_comments(false)
        .generate()
        .map_err(|e| format!("xmlsec-lockdown: bindgen on ffi.h failed: {e}"))?
        .write_to_file(out.join("ffi.rs"))
        .map_err(|e| format!("xmlsec-lockdown: cannot write ffi.rs: {e}"))
}
