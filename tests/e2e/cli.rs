//! The `concierge` binary: config checking with errors that name the file and the key, user
//! administration, migrations.

use std::io::Write;
use std::process::{Command, Stdio};

fn concierge() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_concierge"));
    for (k, _) in std::env::vars() {
        if k.starts_with("CONCIERGE__") {
            c.env_remove(k);
        }
    }
    c
}

#[test]
fn version_is_printed() {
    let out = concierge().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn config_check_names_the_file_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("syntax.toml", "[server\nbind = 1", "not valid TOML"),
        (
            "type.toml",
            "[database]\npool_size = \"many\"",
            "database.pool_size",
        ),
        ("unknown.toml", "[server]\nbnid = \"127.0.0.1:1\"", "bnid"),
        (
            "duration.toml",
            "[session]\nidle_timeout = \"forever\"",
            "session.idle_timeout",
        ),
        (
            "url.toml",
            "[database]\nurl = \"mysql://x\"",
            "database.url",
        ),
        ("bind.toml", "[server]\nbind = \"localhost\"", "server.bind"),
        ("binary.toml", "\u{0}\u{1}\u{2}", "syntax"),
    ];
    for (name, body, expect) in cases {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        let out = concierge()
            .args(["config", "check"])
            .arg(&p)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(name), "{name}: names the file: {err}");
        if expect != "syntax" {
            assert!(err.contains(expect), "{name}: names `{expect}`: {err}");
        }
        assert!(!err.contains("panicked"), "{err}");
    }
    let missing = concierge()
        .args(["config", "check", "/nonexistent/c.toml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/c.toml"));

    let ok = dir.path().join("ok.toml");
    std::fs::write(&ok, "[server]\nbind = \"127.0.0.1:9999\"\n").unwrap();
    let out = concierge()
        .args(["config", "check"])
        .arg(&ok)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = concierge()
        .args(["config", "check"])
        .arg(&ok)
        .env("CONCIERGE__SESSION__IDLE_TIMEOUT", "soon")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains("CONCIERGE__SESSION__IDLE_TIMEOUT") && err.contains("session.idle_timeout"),
        "{err}"
    );
}

/// A SAML upstream's metadata file is parsed by the connector, not by the config loader; a
/// file that is no SAML metadata is still refused naming the key, by `config check` and by
/// `serve` before anything is served (exit 2, like every configuration error).
#[test]
fn saml_metadata_files_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let metadata = dir.path().join("idp.xml");
    std::fs::write(&metadata, "<EntityDescriptor/>").unwrap();
    let p = dir.path().join("saml.toml");
    std::fs::write(
        &p,
        format!(
            "data_dir = {:?}\n[[upstreams]]\nid = \"corp\"\nkind = \"saml\"\nmetadata_file = {:?}\n",
            dir.path(),
            metadata
        ),
    )
    .unwrap();
    let check = concierge()
        .args(["config", "check"])
        .arg(&p)
        .output()
        .unwrap();
    let serve = concierge()
        .arg("serve")
        .arg("--config")
        .arg(&p)
        .output()
        .unwrap();
    for (what, out) in [("config check", check), ("serve", serve)] {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {err}");
        assert!(
            err.contains("saml.toml") && err.contains("upstreams[0].metadata_file"),
            "{what}: {err}"
        );
    }
}

#[test]
fn users_can_be_added_changed_and_disabled_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("c.db").display());
    let run = |args: &[&str], stdin: &str| {
        let mut child = concierge()
            .args(args)
            .env("CONCIERGE__DATABASE__URL", &db)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    assert!(run(&["migrate"], "").status.success());
    let out = run(
        &["users", "add", "Alice@Example.com", "--name", "Alice"],
        "correct horse battery\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("alice@example.com"));
    let dup = run(&["users", "add", "alice@example.com"], "another password\n");
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));
    let weak = run(&["users", "add", "bob@example.com"], "short\n");
    assert!(!weak.status.success());
    assert!(
        run(
            &["users", "passwd", "alice@example.com"],
            "a new long password\n"
        )
        .status
        .success()
    );
    assert!(
        run(&["users", "disable", "alice@example.com"], "")
            .status
            .success()
    );
    let nobody = run(&["users", "disable", "nobody@example.com"], "");
    assert!(String::from_utf8_lossy(&nobody.stderr).contains("no user"));
    let bad = run(&["users", "add", "not an email"], "whatever123\n");
    assert!(!bad.status.success());
}

#[test]
fn demo_mode_refuses_a_public_address() {
    let dir = tempfile::tempdir().unwrap();
    let out = concierge()
        .arg("serve")
        .current_dir(dir.path())
        .env("CONCIERGE__SERVER__BIND", "0.0.0.0:18099")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("demo mode") && err.contains("server.bind"),
        "{err}"
    );
}

/// Issue #17, item 9: outside demo mode no key-encryption key file is made next to the data: a
/// config without a key fails at start with an error naming the setting, and writes no key.
#[test]
fn serve_without_a_key_encryption_key_names_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("concierge.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[server]\nbind = \"127.0.0.1:0\"\n[database]\nurl = \"sqlite://{}/c.db\"\n",
            data.display().to_string(),
            data.display()
        ),
    )
    .unwrap();
    let out = concierge()
        .args(["serve", "--config"])
        .arg(&config)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("provider.key_encryption_key_file"),
        "the error names the setting: {err}"
    );
    assert!(
        !data.join("key-encryption.key").exists(),
        "no key file made"
    );
}
