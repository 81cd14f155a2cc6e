//! Several instances: two `concierge serve` processes on different ports, one PostgreSQL
//! database, started together (migrations serialise). Sign in through A and continue on B;
//! tokens from one work at the other; revoke on B and A refuses at its very next request;
//! a key rotated through the CLI is served by both within the reload interval; back-channel
//! logout is delivered once, not once per instance.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::helpers::{Browser, SECRET};
use crate::logout::{receiver, wait_for};
use crate::oidc::{Http, code_for};
use crate::support::{Backend, fresh_db};

/// A broker process, killed when dropped.
pub(crate) struct Instance {
    child: Child,
    pub(crate) base: String,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn concierge(config: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_concierge"));
    for (k, _) in std::env::vars() {
        if k.starts_with("CONCIERGE__") {
            c.env_remove(k);
        }
    }
    c.env("CONCIERGE_CONFIG", config);
    c
}

pub(crate) fn start(config: &std::path::Path, log: &std::path::Path) -> Instance {
    start_on(config, log, free_port())
}

/// A broker process serving on `port`.
pub(crate) fn start_on(config: &std::path::Path, log: &std::path::Path, port: u16) -> Instance {
    let child = concierge(config)
        .arg("serve")
        .env("CONCIERGE__SERVER__BIND", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    Instance {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

pub(crate) async fn wait_ready(i: &Instance, log: &std::path::Path) {
    for _ in 0..200 {
        if let Ok(r) = reqwest::get(format!("{}/readyz", i.base)).await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "instance {} not ready: {}",
        i.base,
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

async fn kids(base: &str) -> Vec<String> {
    let text = reqwest::get(format!("{base}/jwks"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let jwks: Value = serde_json::from_str(&text).unwrap();
    let mut k: Vec<String> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect();
    k.sort();
    k
}

#[tokio::test]
async fn two_instances_on_one_postgres_behave_as_one() {
    let Some(db) = fresh_db(Backend::Postgres) else {
        return;
    };
    let concierge::config::DatabaseUrl::Postgres(url) = &db.url else {
        unreachable!()
    };
    let (bcl_url, got) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let public = format!("http://127.0.0.1:{}", free_port());
    let config = dir.path().join("concierge.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = {data:?}
[server]
public_url = "{public}"
[database]
url = "{url}"
[session]
touch_interval = "1s"
sweep_interval = "1s"
[provider]
key_encryption_key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
key_reload_interval = "1s"
jwks_max_age = "2m"
[[clients]]
id = "webapp"
secret_sha256 = "{hash}"
redirect_uris = ["https://webapp.example/cb"]
backchannel_logout_uri = "{bcl_url}"
[[clients]]
id = "ops"
channel = "api"
secret_sha256 = "{hash}"
grant_types = ["client_credentials"]
scopes = ["concierge:admin"]
"#,
            data = dir.path().display().to_string(),
            hash = concierge::domain::client::hash_secret(SECRET),
        ),
    )
    .unwrap();
    // Both start at once on an empty database: one migrates, the other waits for it.
    let (log_a, log_b) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let a = start(&config, &log_a);
    let b = start(&config, &log_b);
    wait_ready(&a, &log_a).await;
    wait_ready(&b, &log_b).await;
    let mut add = concierge(&config)
        .args(["users", "add", "pat@example.com"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    add.stdin
        .take()
        .unwrap()
        .write_all(b"two instances one db\n")
        .unwrap();
    assert!(add.wait().unwrap().success());

    // Sign in through A, continue on B with the same cookie.
    let mut on_a = Browser::at(&a.base);
    assert_eq!(
        on_a.login("pat@example.com", "two instances one db")
            .await
            .status,
        303
    );
    let mut on_b = Browser::at(&b.base);
    on_b.cookies = on_a.cookies.clone();
    let page = on_b.get("/account").await;
    assert_eq!(page.status, 200, "B knows A's session");
    assert!(page.body.contains("pat@example.com"));

    // A code from A is redeemed at B; B's access token is active at A.
    let code = code_for(&mut on_a, "webapp", "https://webapp.example/cb").await;
    let (http_a, http_b) = (Http::at(&a.base), Http::at(&b.base));
    let (s, tokens) = http_b
        .exchange("webapp", &code, "https://webapp.example/cb")
        .await;
    assert_eq!(s, 200, "{tokens}");
    let at = tokens["access_token"].as_str().unwrap().to_owned();
    assert_eq!(http_a.introspect(&at).await["active"], true);

    // Revoke on B (admin API, token issued by A): A refuses at its next request.
    let (s, admin) = http_a
        .token(
            "ops",
            &[
                ("grant_type", "client_credentials"),
                ("scope", "concierge:admin"),
            ],
        )
        .await;
    assert_eq!(s, 200);
    let res = reqwest::Client::new()
        .delete(format!(
            "{}/admin/v1/sessions?email=pat%40example.com",
            b.base
        ))
        .bearer_auth(admin["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(on_a.get("/account").await.status, 303, "no staleness");
    assert_eq!(http_a.introspect(&at).await["active"], false);
    // The app hears of it once, though two instances run the outbox.
    assert!(wait_for(&got, 1).await, "back-channel logout delivered");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(got.lock().unwrap().len(), 1, "delivered exactly once");

    // A key rotated through the CLI is published by both instances within the reload interval.
    let before = kids(&a.base).await;
    assert_eq!(before, kids(&b.base).await);
    let out = concierge(&config)
        .args(["keys", "rotate"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut served = false;
    for _ in 0..60 {
        let (ka, kb) = (kids(&a.base).await, kids(&b.base).await);
        if ka.len() == before.len() + 1 && ka == kb {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "both instances serve the new key");

    // Both sweep every second; the database stays consistent and both keep serving.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for i in [&a, &b] {
        let r = reqwest::get(format!("{}/readyz", i.base)).await.unwrap();
        assert!(r.status().is_success());
    }
    for log in [&log_a, &log_b] {
        let text = std::fs::read_to_string(log).unwrap();
        assert!(!text.contains("ERROR"), "{text}");
        assert!(!text.contains("sweep failed"), "{text}");
    }
}
