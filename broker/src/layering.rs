//! Owns the guard on the direction of dependencies (web -> flow -> provider | upstream | session
//! | mfa -> storage -> domain): reads the sources of the low layers and fails when one of them
//! names a module above it. Test only.

mod cycles;
mod paths;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// `module.rs` and every `.rs` file under `module/`.
fn sources(module: &str) -> Vec<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![src.join(format!("{module}.rs"))];
    let mut dirs = vec![src.join(module)];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    files.retain(|f| f.is_file());
    files
}

/// Every `crate::<module>` (the first segment after `crate::`) the files name, with the file.
fn crate_modules(files: &[PathBuf]) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    for f in files {
        let text = std::fs::read_to_string(f).unwrap();
        for (i, _) in text.match_indices("crate::") {
            let rest = &text[i + "crate::".len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let module = if end == 0 {
                // `crate::{a, b}`: name the group so it is never allowed silently.
                rest.chars().take(12).collect()
            } else {
                rest[..end].to_owned()
            };
            found.insert((module, f.display().to_string()));
        }
    }
    found
}

fn assert_only(module: &str, allowed: &[&str]) {
    let files = sources(module);
    assert!(files.len() > 1, "no sources found for {module}");
    let above: Vec<_> = crate_modules(&files)
        .into_iter()
        .filter(|(m, _)| !allowed.contains(&m.as_str()))
        .collect();
    assert!(
        above.is_empty(),
        "{module} may use only {allowed:?}, but names: {above:#?}"
    );
}

#[test]
fn config_imports_only_the_domain() {
    assert_only("config", &["config", "domain", "clock"]);
}

#[test]
fn the_domain_imports_nothing_above_it() {
    assert_only("domain", &["domain", "clock"]);
}

#[test]
fn mfa_does_not_load_the_whole_configuration() {
    let files = sources("mfa");
    assert!(files.len() > 1);
    let whole = ["config::", "Settings"].concat();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        assert!(!text.contains(&whole), "{} names {whole}", f.display());
    }
    let above: Vec<_> = crate_modules(&files)
        .into_iter()
        .filter(|(m, _)| ["provider", "upstream", "flow", "web", "startup"].contains(&m.as_str()))
        .collect();
    assert!(above.is_empty(), "mfa names modules above it: {above:#?}");
}

#[test]
fn the_services_do_not_import_each_other_or_what_is_above_them() {
    let services = ["provider", "upstream", "session", "mfa"];
    for module in services {
        let files = sources(module);
        assert!(
            files.len() > 1 || module == "session",
            "no sources found for {module}"
        );
        let above: Vec<_> = crate_modules(&files)
            .into_iter()
            .filter(|(m, _)| {
                m != module
                    && (services.contains(&m.as_str())
                        || ["flow", "web", "startup"].contains(&m.as_str()))
            })
            .collect();
        assert!(
            above.is_empty(),
            "{module} names a sibling or a module above it: {above:#?}"
        );
    }
}

/// The handlers (issue #13): no handler module names another (`super::login`, `super::mfa` ...);
/// the journey's pages are rendered by `web::outcome`, its steps run in `flow`.
#[test]
fn no_handler_module_imports_another() {
    let handlers = [
        "account",
        "admin_api",
        "login",
        "mfa",
        "oidc",
        "ops",
        "upstream",
    ];
    let web = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src")
        .join("web");
    for h in handlers {
        let text = std::fs::read_to_string(web.join(format!("{h}.rs"))).unwrap();
        for other in handlers.iter().filter(|o| **o != h) {
            for form in [
                format!("super::{other}::"),
                format!("super::{other};"),
                format!("web::{other}::"),
            ] {
                assert!(
                    !text.contains(&form),
                    "web/{h}.rs names the handler module {other} (`{form}`)"
                );
            }
        }
        // And the journey's policy lives in flow, not in a handler.
        assert!(!text.contains("fn decide("), "web/{h}.rs decides a policy");
    }
    // The flow has no HTTP in it.
    for f in sources("flow") {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            !text.contains("actix") && !text.contains("crate::web"),
            "{} names actix or web",
            f.display()
        );
    }
}

#[test]
fn the_guard_sees_what_it_looks_for() {
    // The scan itself: a file naming a module above the domain is caught.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x.rs");
    std::fs::write(
        &f,
        "use crate::domain::Email;\nuse crate::provider::Provider;\n",
    )
    .unwrap();
    let found: Vec<String> = crate_modules(&[f]).into_iter().map(|(m, _)| m).collect();
    assert_eq!(found, ["domain", "provider"]);
}
