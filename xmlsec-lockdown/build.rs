//! Checks, when the crate is built, that the libxmlsec1 it links is the one its FFI was written
//! for: a 1.2 release (1.3 changed `xmlSecSize` and the structures this crate reads) built with
//! `XMLSEC_NO_SIZE_T` (`xmlSecSize` is then `unsigned int`, as `src/lib.rs` declares it). The
//! version found is passed on to the crate, which checks the library loaded at run time
//! against it (`xmlSecCheckVersionExt`).

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
    Ok(())
}
