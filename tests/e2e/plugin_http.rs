//! The `http` capability of plugin contract 0.2 (ADR 17) with the test plugin `test-http`
//! (tests/plugins/test-http-v2), which sends the request the test puts in its answer: an
//! allowed origin with a host-held secret in its bound header, refusals (unlisted origin,
//! redirect off the list, link-local and name-resolved loopback addresses, a secret outside its
//! binding), size and time limits, redaction of secrets from what the plugin reads, the
//! `plugin_http` audit, https peers checked with `[http] ca_file`, and a 0.1 plugin working
//! beside it. Every refusal fails the factor closed: no session, never a 500.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::helpers::{Browser, Page, TestApp, spawn_provider_with};
use crate::mfa::{answer, choose, manifest, plugin};
use crate::per_backend_async;
use crate::support::Backend;
use concierge::startup::{DEMO_EMAIL, DEMO_PASSWORD};
use concierge::storage::{AuditQuery, Store};

const SECRET: &str = "pi-Secret-7f3a9c1e";
const PASS: &str = "pass+Word/42&x";

/// What a test server saw: path, `authorization` header, body.
type Hits = Arc<Mutex<Vec<(String, String, String)>>>;

/// A peer for the plugin: `/accept` answers `accept` when the bound secret came in
/// `authorization`, `/echo` sends back the `authorization` header and the body, `/redirect`
/// points at `redirect_to`, `/big` streams 100 MB, `/slow` answers after 5 s. Records every request.
async fn peer(redirect_to: String) -> (u16, Hits) {
    use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
    let hits: Hits = Arc::default();
    let seen = Arc::clone(&hits);
    let server = HttpServer::new(move || {
        let seen = Arc::clone(&seen);
        let to = redirect_to.clone();
        App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
            let seen = Arc::clone(&seen);
            let to = to.clone();
            async move {
                let auth = req
                    .headers()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                let body = String::from_utf8_lossy(&body).into_owned();
                let path = req.path().to_owned();
                seen.lock()
                    .unwrap()
                    .push((path.clone(), auth.clone(), body.clone()));
                match path.as_str() {
                    "/accept" if auth == SECRET => HttpResponse::Ok().body("accept"),
                    "/accept" => HttpResponse::Forbidden().body("no"),
                    "/echo" => HttpResponse::Ok()
                        .insert_header(("x-echo", auth.clone()))
                        .body(format!("auth={auth} body={body}")),
                    "/redirect" => HttpResponse::Found()
                        .insert_header(("location", to))
                        .finish(),
                    // 100 MB, made as it is sent (the host must stop reading at its cap).
                    "/big" => {
                        HttpResponse::Ok().streaming(futures_util::stream::iter((0..100).map(
                            |_| Ok::<_, std::io::Error>(web::Bytes::from(vec![b'x'; 1 << 20])),
                        )))
                    }
                    "/slow" => {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        HttpResponse::Ok().body("accept")
                    }
                    _ => HttpResponse::NotFound().finish(),
                }
            }
        }))
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let port = server.addrs()[0].port();
    tokio::spawn(server.run());
    (port, hits)
}

/// The broker with `test-http` (granted `http` with `origins` and the secrets `pi`, bound to
/// `authorization` on `bound`, and `pass`, bound to the form field `pass` on `bound`) and
/// the 0.1 plugin `test-factor` beside it.
async fn broker(
    b: Backend,
    origins: &[String],
    bound: &str,
    dir: &std::path::Path,
) -> Option<TestApp> {
    broker_with(b, origins, bound, dir, "").await
}

/// [`broker`] with more top-level TOML (e.g. `[http] ca_file`).
async fn broker_with(
    b: Backend,
    origins: &[String],
    bound: &str,
    dir: &std::path::Path,
    more: &str,
) -> Option<TestApp> {
    std::fs::write(dir.join("pi"), format!("{SECRET}\n")).unwrap();
    std::fs::write(dir.join("pass"), PASS).unwrap();
    let origins: Vec<String> = origins.iter().map(|o| format!("{o:?}")).collect();
    let http = format!(
        "timeout = \"1500ms\"\n\
         [mfa.plugins.http]\norigins = [{}]\n\
         [[mfa.plugins.http.secrets]]\nname = \"pi\"\nfile = {:?}\norigins = [{bound:?}]\nheader = \"Authorization\"\n\
         [[mfa.plugins.http.secrets]]\nname = \"pass\"\nfile = {:?}\norigins = [{bound:?}]\nfield = \"pass\"\n",
        origins.join(", "),
        dir.join("pi").display().to_string(),
        dir.join("pass").display().to_string(),
    );
    let plugins = manifest(
        "test-http",
        &plugin("test/test-http-v2.wasm"),
        &["http"],
        &http,
    ) + &manifest("test-factor", &plugin("test/test-factor-v1.wasm"), &[], "");
    // One sign-in per case: the account's rates would stop the test before the cases do.
    let config = format!(
        "[rate_limit]\nlogin_per_account = \"100/1m\"\nmfa_per_account = \"100/1m\"\n\
         mfa_send_per_account = \"100/1m\"\n\
         {more}\n[mfa]\nrequired = \"required\"\nmax_attempts = 50\nlockout = \"5m\"\n{plugins}"
    );
    spawn_provider_with(b, &[], &config).await
}

/// The reasons of the `plugin_http` audit events, once there are `at_least` of them (they are
/// written in batches) or after 5 s.
pub(crate) async fn http_audit(app: &TestApp, at_least: usize) -> Vec<String> {
    let t = Instant::now();
    loop {
        let rows = app
            .store
            .audit_events(&AuditQuery {
                kind: Some("plugin_http".into()),
                limit: 100,
                ..AuditQuery::default()
            })
            .unwrap();
        if rows.len() >= at_least || t.elapsed() > Duration::from_secs(5) {
            return rows.into_iter().filter_map(|r| r.reason).collect();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Signs in with the password, picks `test-http` and answers with `fields`.
async fn attempt(app: &TestApp, fields: &[(&str, &str)]) -> (Browser, Page) {
    let mut br = Browser::new(app);
    let page = br.login(DEMO_EMAIL, DEMO_PASSWORD).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let form = choose(&mut br, &page, "test-http", "challenge").await;
    assert_eq!(form.status, 200, "{}", form.body);
    let done = answer(&mut br, &form, fields).await;
    (br, done)
}

/// The factor failed closed: the "not working" page (503), no session.
fn failed_closed(what: &str, br: &Browser, page: &Page) {
    assert_eq!(page.status, 503, "{what}: {}", page.body);
    assert!(
        page.body.contains("id=\"mfa-error\""),
        "{what}: {}",
        page.body
    );
    assert!(br.session_cookie().is_none(), "{what} never passes");
}

/// The factor was rejected with the plugin's message (401), no session; the page's text.
fn rejected(what: &str, br: &Browser, page: &Page) -> String {
    assert_eq!(page.status, 401, "{what}: {}", page.body);
    assert!(br.session_cookie().is_none(), "{what} never passes");
    // Handlebars escapes `=` and `&`.
    page.body.replace("&#x3D;", "=").replace("&amp;", "&")
}

async fn http_capability_allows_listed_origins_and_keeps_secrets_in_the_host(b: Backend) {
    let (other, other_hits) = peer(String::new()).await;
    let (side, side_hits) = peer(String::new()).await;
    let (port, hits) = peer(format!("http://127.0.0.1:{other}/accept")).await;
    let origin = format!("http://127.0.0.1:{port}");
    let side_origin = format!("http://127.0.0.1:{side}");
    let dir = tempfile::tempdir().unwrap();
    let Some(app) = broker(
        b,
        &[origin.clone(), side_origin.clone()],
        &origin,
        dir.path(),
    )
    .await
    else {
        return;
    };
    let url = |path: &str| format!("{origin}{path}");

    // An allowed origin: the server sees the secret in the bound header; the factor passes.
    let (br, ok) = attempt(
        &app,
        &[
            ("url", &url("/accept")),
            ("secret", "pi"),
            ("secret_header", "Authorization"),
        ],
    )
    .await;
    assert_eq!(ok.status, 303, "{}", ok.body);
    assert!(br.session_cookie().is_some());
    assert_eq!(
        hits.lock().unwrap()[0],
        ("/accept".into(), SECRET.into(), String::new())
    );

    // An echoing server: the plugin reads the secret redacted, in the body and the headers.
    let (br, page) = attempt(
        &app,
        &[
            ("url", &url("/echo")),
            ("secret", "pi"),
            ("secret_header", "Authorization"),
        ],
    )
    .await;
    let text = rejected("echo", &br, &page);
    assert!(text.contains("auth=[redacted]"), "{text}");
    assert!(!text.contains(SECRET), "{text}");
    // A secret in its bound form field, form-encoded on the wire and redacted either way.
    let (br, page) = attempt(
        &app,
        &[
            ("url", &url("/echo")),
            ("secret", "pass"),
            ("secret_field", "pass"),
        ],
    )
    .await;
    let text = rejected("echo form", &br, &page);
    assert!(text.contains("pass=[redacted]"), "{text}");
    assert!(!text.contains("Word"), "{text}");
    let sent = hits.lock().unwrap().last().unwrap().2.clone();
    assert!(sent.contains("pass=pass%2BWord%2F42%26x"), "{sent}");

    // A redirect is returned as it is, never followed.
    let (br, page) = attempt(&app, &[("url", &url("/redirect"))]).await;
    let text = rejected("redirect", &br, &page);
    assert!(text.contains("status 302"), "{text}");
    assert!(
        other_hits.lock().unwrap().is_empty(),
        "the redirect was followed"
    );

    // Refused by policy: an unlisted origin, a link-local address, a secret outside its header
    // or its origins. The call fails closed whatever the plugin returns.
    for (what, fields) in [
        (
            "unlisted origin",
            vec![("url", format!("http://127.0.0.1:{other}/accept"))],
        ),
        (
            "link-local",
            vec![("url", "http://169.254.169.254/latest/meta-data/".to_owned())],
        ),
        (
            "secret in another header",
            vec![
                ("url", url("/echo")),
                ("secret", "pi".into()),
                ("secret_header", "X-Api-Key".into()),
            ],
        ),
        (
            "secret to another listed origin",
            vec![
                ("url", format!("{side_origin}/echo")),
                ("secret", "pi".into()),
                ("secret_header", "Authorization".into()),
            ],
        ),
        (
            "secret in another field",
            vec![
                ("url", url("/echo")),
                ("secret", "pi".into()),
                ("secret_field", "pass".into()),
            ],
        ),
        (
            "unknown secret",
            vec![
                ("url", url("/echo")),
                ("secret", "nope".into()),
                ("secret_header", "Authorization".into()),
            ],
        ),
    ] {
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (br, page) = attempt(&app, &fields).await;
        failed_closed(what, &br, &page);
    }
    assert!(other_hits.lock().unwrap().is_empty());
    assert!(
        side_hits.lock().unwrap().is_empty(),
        "the secret left its origins"
    );

    // Too large, too slow: closed, within the call's budget.
    let t = Instant::now();
    let (br, page) = attempt(&app, &[("url", &url("/big"))]).await;
    failed_closed("100 MB response", &br, &page);
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    // While a call waits on the slow server, another user's sign-in (the 0.1 plugin) goes on.
    let slow = async {
        let t = Instant::now();
        let (br, page) = attempt(&app, &[("url", &url("/slow"))]).await;
        (br, page, t.elapsed())
    };
    let other = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t = Instant::now();
        let mut br = Browser::new(&app);
        let page = br.login(DEMO_EMAIL, DEMO_PASSWORD).await;
        let form = choose(&mut br, &page, "test-factor", "challenge").await;
        let ok = answer(&mut br, &form, &[("code", "111111")]).await;
        (ok.status, t.elapsed())
    };
    let ((br, page, slow_took), (other_status, other_took)) = tokio::join!(slow, other);
    failed_closed("slow server", &br, &page);
    assert!(slow_took < Duration::from_secs(4), "{slow_took:?}");
    assert_eq!(other_status, 303, "the other sign-in went on");
    // It started 300 ms into the slow call and ended before that call did (at its deadline).
    assert!(
        Duration::from_millis(300) + other_took < slow_took,
        "the other sign-in waited for the slow call: {other_took:?} vs {slow_took:?}"
    );

    // The 0.1 plugin beside it works as before.
    let mut br = Browser::new(&app);
    let page = br.login(DEMO_EMAIL, DEMO_PASSWORD).await;
    let form = choose(&mut br, &page, "test-factor", "challenge").await;
    let ok = answer(&mut br, &form, &[("code", "111111")]).await;
    assert_eq!(ok.status, 303, "{}", ok.body);

    // Every request the host made is audited, without secrets.
    let reasons = http_audit(&app, 10).await;
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with(&format!("test-http GET {origin} 200 "))),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains(" refused ")),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r.contains(" 302 ")), "{reasons:?}");
    assert!(
        !reasons
            .iter()
            .any(|r| r.contains(SECRET) || r.contains("Word")),
        "{reasons:?}"
    );
}

/// A listed host name that resolves to a loopback address is refused: the address connected
/// to is checked, and only an origin naming that very address allows it.
async fn a_name_resolving_to_loopback_is_refused(b: Backend) {
    let (port, hits) = peer(String::new()).await;
    let origin = format!("http://localhost:{port}");
    let dir = tempfile::tempdir().unwrap();
    let Some(app) = broker(b, std::slice::from_ref(&origin), &origin, dir.path()).await else {
        return;
    };
    let (br, page) = attempt(
        &app,
        &[
            ("url", &format!("{origin}/accept")),
            ("secret", "pi"),
            ("secret_header", "Authorization"),
        ],
    )
    .await;
    failed_closed("localhost", &br, &page);
    assert!(hits.lock().unwrap().is_empty(), "connected to loopback");
    // Refused by the host (the resolved address), not a transport failure.
    let reasons = http_audit(&app, 1).await;
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(
        reasons[0].starts_with(&format!(
            "test-http GET {}:{port} refused ",
            "http://localhost"
        )),
        "{reasons:?}"
    );
}

/// A TLS peer (Python's `http.server` under `ssl`) with a certificate for 127.0.0.1 from a CA
/// made here with `openssl`: `/accept` answers `accept` when the secret came in
/// `authorization`. Killed on drop.
struct TlsPeer {
    child: std::process::Child,
    port: u16,
    ca: std::path::PathBuf,
}

impl Drop for TlsPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const TLS_PEER: &str = r#"
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.headers.get("Authorization") == sys.argv[3]
        body = b"accept" if ok else b"no"
        self.send_response(200 if ok else 403)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
srv = http.server.HTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

fn tls_peer(dir: &std::path::Path) -> TlsPeer {
    use std::io::BufRead;
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl is installed");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=concierge test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "leaf.pem",
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
    ]);
    let mut child = std::process::Command::new("python3")
        .args(["-c", TLS_PEER])
        .arg(dir.join("leaf.pem"))
        .arg(dir.join("leaf.key"))
        .arg(SECRET)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no port: {line:?}"));
    TlsPeer {
        child,
        port,
        ca: dir.join("ca.pem"),
    }
}

/// https peers are verified with the broker's own trust settings: a peer whose CA is in
/// `[http] ca_file` is reached (with the secret), the same peer without it fails closed.
async fn https_peers_are_checked_with_the_brokers_trust_settings(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let peer = tls_peer(dir.path());
    let origin = format!("https://127.0.0.1:{}", peer.port);
    let fields = [
        ("url", format!("{origin}/accept")),
        ("secret", "pi".into()),
        ("secret_header", "Authorization".into()),
    ];
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let trusted = format!("[http]\nca_file = {:?}\n", peer.ca.display().to_string());
    let Some(app) = broker_with(
        b,
        std::slice::from_ref(&origin),
        &origin,
        dir.path(),
        &trusted,
    )
    .await
    else {
        return;
    };
    let (br, ok) = attempt(&app, &fields).await;
    assert_eq!(ok.status, 303, "{}", ok.body);
    assert!(br.session_cookie().is_some());
    drop(app);
    let other = tempfile::tempdir().unwrap();
    let Some(app) = broker(b, std::slice::from_ref(&origin), &origin, other.path()).await else {
        return;
    };
    let (br, page) = attempt(&app, &fields).await;
    failed_closed("unknown CA", &br, &page);
    let reasons = http_audit(&app, 1).await;
    assert!(
        reasons[0].starts_with(&format!("test-http GET {origin} failed ")),
        "{reasons:?}"
    );
}

per_backend_async!(
    https_peers_are_checked_with_the_brokers_trust_settings,
    http_capability_allows_listed_origins_and_keeps_secrets_in_the_host,
    a_name_resolving_to_loopback_is_refused,
);
