//! Spawns a broker in-process and drives it like a browser (cookies, CSRF tokens), no redirects.

use std::collections::BTreeMap;
use std::sync::Arc;

use concierge::clock::{ManualClock, OsEntropy};
use concierge::config::Settings;
use concierge::startup::{Application, Deps};
use concierge::storage::{DieselStore, Store};
use reqwest::header::{COOKIE, SET_COOKIE};

use crate::support::{Backend, TestDb, fresh_db, open_store};

pub const START: i64 = 1_800_000_000;

pub struct TestApp {
    pub base: String,
    pub clock: Arc<ManualClock>,
    pub store: Arc<DieselStore>,
    _db: TestDb,
    _dir: Option<tempfile::TempDir>,
    /// The config file of a broker started with one.
    pub config: Option<std::path::PathBuf>,
}

impl TestApp {
    /// The database this broker uses (tests that read it as an attacker with a backup would).
    pub fn db_url(&self) -> &concierge::config::DatabaseUrl {
        &self._db.url
    }

    /// The `concierge` binary pointed at this broker's config and database.
    pub fn cli(&self) -> std::process::Command {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_concierge"));
        for (k, _) in std::env::vars() {
            if k.starts_with("CONCIERGE__") {
                c.env_remove(k);
            }
        }
        let url = match &self._db.url {
            concierge::config::DatabaseUrl::Sqlite(p) => format!("sqlite://{}", p.display()),
            concierge::config::DatabaseUrl::Postgres(u) => u.clone(),
        };
        c.env("CONCIERGE__DATABASE__URL", url);
        if let Some(p) = &self.config {
            c.env("CONCIERGE_CONFIG", p);
        }
        c
    }
}

/// A broker in demo mode (demo user present) with `env` overrides; None if the backend is skipped.
pub async fn spawn(backend: Backend, env: &[(&str, &str)]) -> Option<TestApp> {
    start(backend, None, env).await
}

/// Starts a broker on a fresh database, with a config file (in `config`'s folder) or in demo
/// mode, a manual clock at START, and the demo user.
async fn start(
    backend: Backend,
    config: Option<(tempfile::TempDir, std::path::PathBuf)>,
    env: &[(&str, &str)],
) -> Option<TestApp> {
    concierge::telemetry::init(concierge::config::LogFormat::Text, "warn");
    let db = fresh_db(backend)?;
    let store = open_store(&db);
    let mut vars: Vec<(String, String)> =
        vec![("CONCIERGE__SERVER__BIND".into(), "127.0.0.1:0".into())];
    vars.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let settings = Settings::load(config.as_ref().map(|(_, p)| p.as_path()), vars).unwrap();
    let clock = Arc::new(ManualClock::new(START));
    let deps = Deps {
        clock: clock.clone(),
        entropy: Arc::new(OsEntropy),
    };
    concierge::startup::ensure_demo_user(store.as_ref(), &deps).unwrap();
    let dyn_store: Arc<dyn Store> = store.clone();
    let app = Application::build_with_store(settings, deps, dyn_store).unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    Some(TestApp {
        base,
        clock,
        store,
        _db: db,
        config: config.as_ref().map(|(_, p)| p.clone()),
        _dir: config.map(|(d, _)| d),
    })
}

/// Clients every OIDC test can use.
pub const CLIENTS_TOML: &str = r#"
[[clients]]
id = "webapp"
name = "Web App"
secret_sha256 = "SECRET_HASH"
redirect_uris = ["https://webapp.example/cb"]
post_logout_redirect_uris = ["https://webapp.example/bye"]

[[clients]]
id = "second"
secret_sha256 = "SECRET_HASH"
auth_method = "client_secret_post"
redirect_uris = ["https://second.example/cb"]
signing_alg = "ES256"

[[clients]]
id = "native"
public = true
channel = "mobile"
redirect_uris = ["http://127.0.0.1/callback", "com.example.app:/oauth2redirect"]

[[clients]]
id = "service"
channel = "api"
secret_sha256 = "SECRET_HASH"
grant_types = ["client_credentials"]
scopes = ["orders.read", "orders.write"]
signing_alg = "ES256"
audience = "https://api.example"
"#;
pub const SECRET: &str = "correct-horse-battery-staple-0123456789";

/// A broker with the clients above, a demo user and a manual clock.
pub async fn spawn_provider(backend: Backend, env: &[(&str, &str)]) -> Option<TestApp> {
    spawn_provider_with(backend, env, "").await
}

/// Like `spawn_provider`, with more TOML (e.g. clients) appended to the config file.
pub async fn spawn_provider_with(
    backend: Backend,
    env: &[(&str, &str)],
    extra_toml: &str,
) -> Option<TestApp> {
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "data_dir = {:?}\n[provider]\nkey_encryption_key = \"{}\"\n{}",
        dir.path().display().to_string(),
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        format!("{CLIENTS_TOML}\n{extra_toml}").replace(
            "SECRET_HASH",
            &concierge::domain::client::hash_secret(SECRET)
        )
    );
    let path = dir.path().join("concierge.toml");
    std::fs::write(&path, body).unwrap();
    start(backend, Some((dir, path)), env).await
}

/// A cookie-keeping HTTP client that never follows redirects.
pub struct Browser {
    pub client: reqwest::Client,
    pub cookies: BTreeMap<String, String>,
    pub base: String,
}

/// A form of a page: its action as written (unescaped) and its inputs as (type, name, value).
pub type Form = (String, Vec<(String, String, String)>);

pub struct Page {
    pub status: u16,
    pub location: Option<String>,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Page {
    /// The value of the hidden form field `name`.
    pub fn field(&self, name: &str) -> String {
        let needle = format!("name=\"{name}\" value=\"");
        let start = self
            .body
            .find(&needle)
            .unwrap_or_else(|| panic!("no field {name} in {}", self.body))
            + needle.len();
        let end = self.body[start..].find('"').unwrap() + start;
        self.body[start..end].to_owned()
    }

    /// The forms of the page, in order: the action as written (unescaped) and the inputs, each
    /// as (type, name, value).
    pub fn forms(&self) -> Vec<Form> {
        let mut out = Vec::new();
        let mut rest = self.body.as_str();
        while let Some(i) = rest.find("<form") {
            rest = &rest[i..];
            let close = rest.find("</form>").unwrap_or(rest.len());
            let open_end = rest[..close].find('>').unwrap_or(close);
            let action = attribute(&rest[..open_end], "action").unwrap_or_default();
            let mut inputs = Vec::new();
            let mut body = &rest[open_end..close];
            while let Some(j) = body.find("<input") {
                body = &body[j..];
                let end = body.find('>').unwrap_or(body.len());
                let tag = &body[..end];
                if let Some(name) = attribute(tag, "name") {
                    inputs.push((
                        attribute(tag, "type").unwrap_or_else(|| "text".into()),
                        name,
                        attribute(tag, "value").unwrap_or_default(),
                    ));
                }
                body = &body[end..];
            }
            out.push((action, inputs));
            rest = &rest[close..];
        }
        out
    }

    /// The first form whose action is `action` (its path; a query on either side is ignored):
    /// the action as written and its hidden inputs (name, value). What a browser submits without
    /// the user typing anything, whatever the form carries (ticket, return path, journey id).
    fn hidden_form(&self, action: &str) -> Option<(String, Vec<(String, String)>)> {
        let path = |a: &str| a.split('?').next().unwrap_or_default().to_owned();
        self.forms()
            .into_iter()
            .find(|(a, _)| path(a) == path(action))
            .map(|(a, inputs)| {
                let hidden = inputs
                    .into_iter()
                    .filter(|(t, _, _)| t.eq_ignore_ascii_case("hidden"))
                    .map(|(_, n, v)| (n, v))
                    .collect();
                (a, hidden)
            })
    }

    /// The hidden inputs (name, value) of the first form whose action is `action` (see
    /// `hidden_form`); panics with the page when there is none.
    pub fn form_fields(&self, action: &str) -> Vec<(String, String)> {
        self.hidden_form(action)
            .unwrap_or_else(|| panic!("no form with action {action} in {}", self.body))
            .1
    }

    /// The action of the first form whose action is `action`, as written (with its query):
    /// where a browser posts it.
    pub fn form_action(&self, action: &str) -> String {
        self.hidden_form(action)
            .unwrap_or_else(|| panic!("no form with action {action} in {}", self.body))
            .0
    }

    /// Whether the page has a form whose action is `action`.
    pub fn has_form(&self, action: &str) -> bool {
        self.hidden_form(action).is_some()
    }

    /// The `href` (unescaped) of the first link carrying `marker` in its tag (e.g.
    /// `data-upstream="corp"`).
    pub fn link(&self, marker: &str) -> Option<String> {
        let mut rest = self.body.as_str();
        while let Some(i) = rest.find("<a ") {
            rest = &rest[i..];
            let end = rest.find('>').unwrap_or(rest.len());
            let tag = &rest[..end];
            if tag.contains(marker) {
                return attribute(tag, "href");
            }
            rest = &rest[end..];
        }
        None
    }
}

/// The value of attribute `name` in a tag's text (double-quoted, as the templates write them),
/// HTML-unescaped.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let needle = format!(" {name}=\"");
    let start = tag.find(&needle)? + needle.len();
    let end = tag[start..].find('"')? + start;
    Some(unescape_html(&tag[start..end]))
}

/// Undoes HTML escaping (handlebars writes `&amp;`, `&quot;`, `&#x27;`, `&#x3D;`, `&#x60;` ...).
pub fn unescape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let decoded = rest.find(';').and_then(|end| {
            let entity = &rest[1..end];
            let c = match entity {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => entity
                    .strip_prefix("#x")
                    .or_else(|| entity.strip_prefix("#X"))
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse::<u32>().ok()))
                    .and_then(char::from_u32),
            };
            c.map(|c| (c, end))
        });
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

impl Browser {
    pub fn new(app: &TestApp) -> Self {
        Self::at(&app.base)
    }

    /// A browser for a broker at `base` (e.g. one of several instances).
    pub fn at(base: &str) -> Self {
        Self {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .user_agent("concierge-e2e/1.0")
                .build()
                .unwrap(),
            cookies: BTreeMap::new(),
            base: base.to_owned(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn finish(&mut self, res: reqwest::Response) -> Page {
        for sc in res.headers().get_all(SET_COOKIE) {
            let sc = sc.to_str().unwrap();
            let (pair, attrs) = sc.split_once(';').unwrap_or((sc, ""));
            let (k, v) = pair.split_once('=').unwrap();
            if attrs.to_ascii_lowercase().contains("max-age=0") {
                self.cookies.remove(k.trim());
            } else {
                self.cookies
                    .insert(k.trim().to_owned(), v.trim().to_owned());
            }
        }
        Page {
            status: res.status().as_u16(),
            location: res
                .headers()
                .get("location")
                .map(|v| v.to_str().unwrap().to_owned()),
            headers: res.headers().clone(),
            body: res.text().await.unwrap(),
        }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        self.get_with(path, &[]).await
    }

    pub async fn get_with(&mut self, path: &str, headers: &[(&str, &str)]) -> Page {
        let mut req = self
            .client
            .get(format!("{}{path}", self.base))
            .header(COOKIE, self.cookie_header());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = req.send().await.unwrap();
        self.finish(res).await
    }

    pub async fn post_raw(
        &mut self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> Page {
        let res = self
            .client
            .post(format!("{}{path}", self.base))
            .header(COOKIE, self.cookie_header())
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        self.finish(res).await
    }

    pub async fn post_form(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        self.post_raw(path, "application/x-www-form-urlencoded", body)
            .await
    }

    /// Opens the login page and submits it (with whatever hidden fields its form carries).
    pub async fn login(&mut self, email: &str, password: &str) -> Page {
        let page = self.get("/login").await;
        assert_eq!(page.status, 200);
        self.submit(&page, "/login", &[("email", email), ("password", password)])
            .await
    }

    /// Submits the first form of `page` whose action is `action` as a browser would: every
    /// hidden input of that form, with `fields` added (or replacing hidden ones of the same
    /// name), posted to the action as written.
    pub async fn submit(&mut self, page: &Page, action: &str, fields: &[(&str, &str)]) -> Page {
        let (to, mut all) = (page.form_action(action), page.form_fields(action));
        for (name, value) in fields {
            match all.iter().position(|(n, _)| n == name) {
                Some(i) => all[i].1 = (*value).to_owned(),
                None => all.push(((*name).to_owned(), (*value).to_owned())),
            }
        }
        let to = to
            .strip_prefix(self.base.as_str())
            .unwrap_or(&to)
            .to_owned();
        let pairs: Vec<(&str, &str)> = all.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        self.post_form(&to, &pairs).await
    }

    /// Follows the redirects of `page` that stay on this broker (GET, at most 10); returns the
    /// locations followed and the first answer that is not such a redirect (a page, or a
    /// redirect elsewhere: an app, an upstream).
    pub async fn follow(&mut self, page: Page) -> (Vec<String>, Page) {
        let mut page = page;
        let mut trail = Vec::new();
        for _ in 0..10 {
            let here = match (&page.location, page.status) {
                (Some(l), 301..=303 | 307 | 308) => {
                    if l.starts_with('/') && !l.starts_with("//") {
                        l.clone()
                    } else if let Some(p) = l
                        .strip_prefix(self.base.as_str())
                        .filter(|p| p.starts_with('/'))
                    {
                        p.to_owned()
                    } else {
                        break;
                    }
                }
                _ => break,
            };
            trail.push(here.clone());
            page = self.get(&here).await;
        }
        (trail, page)
    }

    pub fn session_cookie(&self) -> Option<String> {
        self.cookies.get("concierge_session").cloned()
    }
}

/// Asserts that a page is an error page of `status` that gives nothing internal away.
pub fn assert_error_page(page: &Page, status: u16) {
    assert_eq!(page.status, status, "{}", page.body);
    assert!(
        page.body.contains(&format!("data-status=\"{status}\"")),
        "{}",
        page.body
    );
    for leak in ["panicked", "diesel", "src/", "actix", "Error {", "serde"] {
        assert!(
            !page.body.contains(leak),
            "error page leaks `{leak}`: {}",
            page.body
        );
    }
}
