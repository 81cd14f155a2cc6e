//! The OpenID provider over HTTP: code + PKCE, SSO, native apps, tokens, refresh rotation,
//! introspection, revocation, userinfo, and the negative cases, on both backends.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use concierge::domain::jose::Alg;
use concierge::jwt::{self, Verifier};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::helpers::{Browser, Page, SECRET, TestApp, assert_error_page, spawn_provider};
use crate::per_backend_async;
use crate::support::Backend;

const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk-extra-entropy";

fn challenge(v: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(v.as_bytes()))
}

fn query_of(location: &str) -> Vec<(String, String)> {
    let u = url::Url::parse(location).unwrap();
    u.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn param(location: &str, k: &str) -> Option<String> {
    query_of(location)
        .into_iter()
        .find(|(n, _)| n == k)
        .map(|(_, v)| v)
}

pub(crate) fn authorize_path_with(client: &str, redirect: &str, extra: &[(&str, &str)]) -> String {
    let [(a, b), (c, d)] = pkce();
    let mut all: Vec<(&str, &str)> = vec![(a, &b), (c, &d)];
    all.extend_from_slice(extra);
    authorize_path(client, redirect, &all)
}

/// A code for `client` on this browser's session, with more authorization parameters.
pub(crate) async fn code_for_with(
    br: &mut Browser,
    client: &str,
    redirect: &str,
    extra: &[(&str, &str)],
) -> String {
    let res = br.get(&authorize_path_with(client, redirect, extra)).await;
    assert_eq!(res.status, 302, "{}", res.body);
    let loc = res.location.unwrap();
    assert!(loc.starts_with(redirect), "{loc}");
    param(&loc, "code").unwrap_or_else(|| panic!("no code in {loc}"))
}

fn authorize_path(client: &str, redirect: &str, extra: &[(&str, &str)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    s.append_pair("response_type", "code");
    s.append_pair("client_id", client);
    s.append_pair("redirect_uri", redirect);
    s.append_pair("scope", "openid email profile offline_access");
    s.append_pair("state", "st-123");
    s.append_pair("nonce", "n-456");
    for (k, v) in extra {
        s.append_pair(k, v);
    }
    format!("/authorize?{}", s.finish())
}

fn pkce() -> [(&'static str, String); 2] {
    [
        ("code_challenge", challenge(VERIFIER)),
        ("code_challenge_method", "S256".into()),
    ]
}

pub(crate) async fn code_for(br: &mut Browser, client: &str, redirect: &str) -> String {
    let [(a, b), (c, d)] = pkce();
    let res = br
        .get(&authorize_path(client, redirect, &[(a, &b), (c, &d)]))
        .await;
    assert_eq!(res.status, 302, "{}", res.body);
    let loc = res.location.unwrap();
    assert!(loc.starts_with(redirect), "{loc}");
    assert_eq!(param(&loc, "state").as_deref(), Some("st-123"));
    param(&loc, "code").unwrap_or_else(|| panic!("no code in {loc}"))
}

pub(crate) struct Http {
    client: reqwest::Client,
    base: String,
}

impl Http {
    pub(crate) fn new(app: &TestApp) -> Self {
        Self::at(&app.base)
    }
    pub(crate) fn at(base: &str) -> Self {
        Self {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: base.to_owned(),
        }
    }
    pub(crate) async fn post(
        &self,
        path: &str,
        basic: Option<(&str, &str)>,
        form: &[(&str, &str)],
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut req = self.client.post(format!("{}{path}", self.base)).form(form);
        if let Some((u, p)) = basic {
            req = req.basic_auth(u, Some(p));
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().await.unwrap();
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
    pub(crate) async fn token(&self, client: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let (s, _, v) = self.post("/token", Some((client, SECRET)), form).await;
        (s, v)
    }
    async fn refresh(&self, client: &str, refresh_token: &str) -> (u16, Value) {
        self.token(
            client,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
        )
        .await
    }
    pub(crate) async fn exchange(&self, client: &str, code: &str, redirect: &str) -> (u16, Value) {
        self.token(
            client,
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", redirect),
                ("code_verifier", VERIFIER),
            ],
        )
        .await
    }
    pub(crate) async fn introspect(&self, token: &str) -> Value {
        let (s, _, v) = self
            .post("/introspect", Some(("webapp", SECRET)), &[("token", token)])
            .await;
        assert_eq!(s, 200, "{v}");
        v
    }
    pub(crate) async fn get_json(
        &self,
        path: &str,
        bearer: Option<&str>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        self.call("GET", path, bearer).await
    }
    /// Any method, optional bearer token: status, headers, body (JSON when it parses).
    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().await.unwrap();
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

/// Verifies a JWT against the keys the broker publishes at /jwks.
pub(crate) async fn verify_with_jwks(http: &Http, token: &str) -> serde_json::Map<String, Value> {
    let (_, _, jwks) = http.get_json("/jwks", None).await;
    let keys = jwks["keys"].as_array().unwrap().clone();
    let look = move |kid: &str| {
        let k = keys.iter().find(|k| k["kid"] == kid)?;
        let b = |f: &str| URL_SAFE_NO_PAD.decode(k[f].as_str().unwrap()).unwrap();
        let alg = Alg::parse(k["alg"].as_str()?)?;
        let v = match k["kty"].as_str()? {
            "RSA" => Verifier::Rsa {
                n: b("n"),
                e: b("e"),
            },
            "EC" => Verifier::Ec {
                point: [vec![4u8], b("x"), b("y")].concat(),
            },
            _ => Verifier::Ed { public: b("x") },
        };
        Some((alg, v))
    };
    jwt::verify(token, look).unwrap().1
}

async fn signed_in(app: &TestApp) -> Browser {
    let mut br = Browser::new(app);
    assert_eq!(br.login("demo@example.com", "demo").await.status, 303);
    br
}

async fn discovery_and_cacheable_jwks(b: Backend) {
    let Some(app) = spawn_provider(b, &[]).await else {
        return;
    };
    let http = Http::new(&app);
    let (s, _, d) = http
        .get_json("/.well-known/openid-configuration", None)
        .await;
    assert_eq!(s, 200);
    let issuer = d["issuer"].as_str().unwrap().to_owned();
    assert_eq!(d["token_endpoint"], format!("{issuer}/token"));
    assert_eq!(
        d["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    let (s, h, jwks) = http.get_json("/jwks", None).await;
    assert_eq!(s, 200);
    assert_eq!(h.get("cache-control").unwrap(), "public, max-age=600");
    let algs: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["alg"].as_str().unwrap())
        .collect();
    assert!(
        algs.contains(&"RS256") && algs.contains(&"ES256"),
        "{algs:?}"
    );
    assert!(
        jwks.to_string().find("\"d\"").is_none(),
        "no private parts published"
    );
    // HEAD (CDNs, health checks): the GET's status and headers, no body.
    for path in ["/.well-known/openid-configuration", "/jwks"] {
        let res = reqwest::Client::new()
            .head(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 200, "{path}");
        let h = res.headers().clone();
        assert_eq!(h.get("content-type").unwrap(), "application/json", "{path}");
        assert!(
            h.get("cache-control")
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("public, max-age="),
            "{path}"
        );
        assert!(res.bytes().await.unwrap().is_empty(), "{path}");
    }
}

async fn code_flow_with_pkce_issues_verifiable_tokens(b: Backend) {
    let Some(app) = spawn_provider(b, &[]).await else {
        return;
    };
    let http = Http::new(&app);
    let mut br = signed_in(&app).await;
    let code = code_for(&mut br, "webapp", "https://webapp.example/cb").await;
    let (s, t) = http
        .exchange("webapp", &code, "https://webapp.example/cb")
        .await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["expires_in"], 900);
    let at = t["access_token"].as_str().unwrap();
    let id = verify_with_jwks(&http, t["id_token"].as_str().unwrap()).await;
    assert_eq!(id["nonce"], "n-456");
    assert_eq!(id["aud"], "webapp");
    assert_eq!(id["azp"], "webapp");
    assert_eq!(id["at_hash"], jwt::half_hash(at));
    assert_eq!(id["amr"], serde_json::json!(["pwd"]));
    assert_eq!(id["acr"], "urn:concierge:loa:1");
    assert_eq!(id["email"], "demo@example.com");
    assert_eq!(id["auth_time"], crate::helpers::START);
    assert!(id["sid"].as_str().is_some_and(|s| !s.is_empty()));
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(at.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "RS256");
    let claims = verify_with_jwks(&http, at).await;
    for k in [
        "iss",
        "sub",
        "aud",
        "exp",
        "iat",
        "jti",
        "client_id",
        "scope",
        "sid",
        "auth_time",
        "acr",
        "amr",
    ] {
        assert!(claims.contains_key(k), "access token lacks {k}");
    }
    assert_eq!(claims["sid"], id["sid"]);
    let (s, _, ui) = http.get_json("/userinfo", Some(at)).await;
    assert_eq!(s, 200, "{ui}");
    assert_eq!(ui["email"], "demo@example.com");
    assert_eq!(ui["sub"], id["sub"]);
    let intro = http.introspect(at).await;
    assert_eq!(intro["active"], true);
    assert_eq!(intro["client_id"], "webapp");
    assert!(t["refresh_token"].is_string());
}

async fn a_second_client_gets_sso_and_its_own_algorithm(b: Backend) {
    let Some(app) = spawn_provider(b, &[]).await else {
        return;
    };
    let http = Http::new(&app);
    let mut br = signed_in(&app).await;
    code_for(&mut br, "webapp", "https://webapp.example/cb").await;
    // No login page: the first-party session is reused.
    let code = code_for(&mut br, "second", "https://second.example/cb").await;
    let (s, _, t) = http
        .post(
            "/token",
            None,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", "https://second.example/cb"),
                ("code_verifier", VERIFIER),
                ("client_id", "second"),
                ("client_secret", SECRET),
            ],
        )
        .await;
    assert_eq!(s, 200, "{t}");
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(t["id_token"].as_str().unwrap().split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "ES256");
    verify_with_jwks(&http, t["id_token"].as_str().unwrap()).await;
}

async fn native_apps_use_any_loopback_port_and_must_use_pkce(b: Backend) {
    let Some(app) = spawn_provider(b, &[]).await else {
        return;
    };
    let http = Http::new(&app);
    let mut br = signed_in(&app).await;
    let redirect = "http://127.0.0.1:49152/callback";
    // Without PKCE: an error sent back to the (registered) redirect URI.
    let res = br.get(&authorize_path("native", redirect, &[])).await;
    let loc = res.location.unwrap();
    assert_eq!(param(&loc, "error").as_deref(), Some("invalid_request"));
    assert_eq!(param(&loc, "state").as_deref(), Some("st-123"));
    // plain is refused.
    let res = br
        .get(&authorize_path(
            "native",
            redirect,
            &[
                ("code_challenge", VERIFIER),
                ("code_challenge_method", "plain"),
            ],
        ))
        .await;
    assert_eq!(
        param(&res.location.unwrap(), "error").as_deref(),
        Some("invalid_request")
    );
    let code = code_for(&mut br, "native", redirect).await;
    let (s, _, t) = http
        .post(
            "/token",
            None,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", redirect),
                ("code_verifier", VERIFIER),
                ("client_id", "native"),
            ],
        )
        .await;
    assert_eq!(s, 200, "{t}");
    let code = code_for(&mut br, "native", "com.example.app:/oauth2redirect").await;
    assert!(!code.is_empty());
}

async fn untrusted_redirects_get_a_page_not_a_redirect(b: Backend) {
    let Some(app) = spawn_provider(b, &[]).await else {
        return;
    };
    let mut br = signed_in(&app).await;
    for path in [
        authorize_path("webapp", "https://evil.example/cb", &[]),
        authorize_path("webapp", "https://webapp.example/cb/../evil", &[]),
        // Compared as strings (RFC 9700 2.1), not as parsed URLs.
        authorize_path("webapp", "https://WEBAPP.example/cb", &[]),
        authorize_path("webapp", "https://webapp.example:443/cb", &[]),
        authorize_path("webapp", "https://webapp.example/x/../cb", &[]),
        authorize_path("nobody", "https://webapp.example/cb", &[]),
        "/authorize?response_type=code".to_owned(),
        format!(
            "{}&redirect_uri=https%3A%2F%2Fwebapp.example%2Fcb",
            authorize_path("webapp", "https://webapp.example/cb", &[])
        ),
    ] {
        let res = br.get(&path).await;
        assert!(
            res.location.is_none(),
            "{path} redirected to {:?}",
            res.location
        );
        assert_error_page(&res, 400);
    }
    // Once client and redirect URI are trusted, errors go back to the client.
    let path = authorize_path("webapp", "https://webapp.example/cb", &[])
        .replace("response_type=code", "response_type=token");
    let res = br.get(&path).await;
    assert_eq!(res.status, 302);
    assert_eq!(
        param(&res.location.unwrap(), "error").as_deref(),
        Some("unsupported_response_type")
    );
    // Request objects (OIDC Core 6.1, 6.2): their own error codes, with state and iss.
    let (_, _, d) = Http::new(&app)
        .get_json("/.well-known/openid-configuration", None)
        .await;
    let issuer = d["issuer"].as_str().unwrap().to_owned();
    for (k, v, error) in [
        (
            "request",
            "eyJhbGciOiJub25lIn0.e30.",
            "request_not_supported",
        ),
        (
            "request_uri",
            "https://webapp.example/req.jwt",
            "request_uri_not_supported",
        ),
    ] {
        let res = br
            .get(&authorize_path_with(
                "webapp",
                "https://webapp.example/cb",
                &[(k, v)],
            ))
            .await;
        assert_eq!(res.status, 302, "{}", res.body);
        let loc = res.location.unwrap();
        assert!(loc.starts_with("https://webapp.example/cb?"), "{loc}");
        assert_eq!(param(&loc, "error").as_deref(), Some(error), "{loc}");
        assert_eq!(param(&loc, "state").as_deref(), Some("st-123"));
        assert_eq!(param(&loc, "iss").as_deref(), Some(issuer.as_str()));
        assert!(param(&loc, "code").is_none());
    }
}

async fn negative_token_requests_get_rfc_errors_and_no_tokens(b: Backend) {
    let Some(app) = spawn_provider(b, &[]).await else {
        return;
    };
    let http = Http::new(&app);
    let mut br = signed_in(&app).await;
    let redirect = "https://webapp.example/cb";

    // Wrong PKCE verifier.
    let code = code_for(&mut br, "webapp", redirect).await;
    let (s, t) = http
        .token(
            "webapp",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", redirect),
                ("code_verifier", &format!("{VERIFIER}x")),
            ],
        )
        .await;
    assert_eq!(
        (s, t["error"].as_str()),
        (400, Some("invalid_grant")),
        "{t}"
    );
    assert!(t.get("access_token").is_none());

    // Wrong secret and unknown client: 401 invalid_client with WWW-Authenticate.
    let code = code_for(&mut br, "webapp", redirect).await;
    let (s, h, t) = http
        .post(
            "/token",
            Some(("webapp", "wrong")),
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", redirect),
                ("code_verifier", VERIFIER),
            ],
        )
        .await;
    assert_eq!((s, t["error"].as_str()), (401, Some("invalid_client")));
    assert!(h.get("www-authenticate").is_some());
    let (s, _, t) = http
        .post(
            "/token",
            Some(("ghost", SECRET)),
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!((s, t["error"].as_str()), (401, Some("invalid_client")));
    // The code survived the failed client authentication; the right client can use it once.
    let (s, first) = http.exchange("webapp", &code, redirect).await;
    assert_eq!(s, 200, "{first}");

    // Replay: refused, and what the code issued is revoked.
    let (s, t) = http.exchange("webapp", &code, redirect).await;
    assert_eq!((s, t["error"].as_str()), (400, Some("invalid_grant")));
    assert_eq!(
        http.introspect(first["access_token"].as_str().unwrap())
            .await["active"],
        false
    );
    let (s, t) = http
        .refresh("webapp", first["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(
        (s, t["error"].as_str()),
        (400, Some("invalid_grant")),
        "{t}"
    );

    // Expired code.
    let code = code_for(&mut br, "webapp", redirect).await;
    app.clock.advance(61);
    let (s, t) = http.exchange("webapp", &code, redirect).await;
    assert_eq!((s, t["error"].as_str()), (400, Some("invalid_grant")));

    // Another client's code, another redirect URI.
    let code = code_for(&mut br, "webapp", redirect).await;
    let (s, t) = http
        .token(
            "webapp",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", "https://webapp.example/other"),
                ("code_verifier", VERIFIER),
            ],
        )
        .await;
    assert_eq!((s, t["error"].as_str()), (400, Some("invalid_grant")));

    // Garbage.
    let (s, _, t) = http
        .post(
            "/token",
            Some(("webapp", SECRET)),
            &[("grant_type", "password")],
        )
        .await;
    assert_eq!(
        (s, t["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
    let res = reqwest::Client::new()
        .post(format!("{}/token", app.base))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
    let v: Value = serde_json::from_str(&res.text().await.unwrap()).unwrap();
    assert_eq!(v["error"], "invalid_request");
}

/// The ways someone other than the code's owner may present it: another confidential client,
/// a public client (no credential at all), a wrong or missing PKCE verifier, another redirect.
async fn wrong_presentations(http: &Http, code: &str, redirect: &str) {
    let wrong_verifier = format!("{VERIFIER}x");
    let form = |redirect: &str, verifier: Option<&str>, extra: &[(&str, &str)]| {
        let mut f: Vec<(String, String)> = vec![
            ("grant_type".into(), "authorization_code".into()),
            ("code".into(), code.into()),
            ("redirect_uri".into(), redirect.into()),
        ];
        f.extend(verifier.map(|v| ("code_verifier".into(), v.into())));
        f.extend(extra.iter().map(|(k, v)| ((*k).into(), (*v).into())));
        f
    };
    let webapp = Some(("webapp", SECRET));
    let attempts = [
        (
            None,
            form(redirect, Some(VERIFIER), &[("client_id", "native")]),
        ),
        (
            None,
            form(
                redirect,
                Some(VERIFIER),
                &[("client_id", "second"), ("client_secret", SECRET)],
            ),
        ),
        (webapp, form(redirect, Some(&wrong_verifier), &[])),
        (webapp, form(redirect, None, &[])),
        (
            webapp,
            form("https://webapp.example/other", Some(VERIFIER), &[]),
        ),
    ];
    for (basic, f) in attempts {
        let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let (s, _, t) = http.post("/token", basic, &f).await;
        assert_eq!(
            (s, t["error"].as_str()),
            (400, Some("invalid_grant")),
            "{f:?}: {t}"
        );
        assert!(t.get("access_token").is_none());
    }
}

async fn a_code_is_spent_only_by_its_owner(b: Backend) {
    let Some(app) = spawn_provider(b, &[]).await else {
        return;
    };
    let http = Http::new(&app);
    let mut br = signed_in(&app).await;
    let redirect = "https://webapp.example/cb";
    // Before redemption: each wrong presentation fails and leaves the code to its owner.
    let code = code_for(&mut br, "webapp", redirect).await;
    wrong_presentations(&http, &code, redirect).await;
    let (s, first) = http.exchange("webapp", &code, redirect).await;
    assert_eq!(s, 200, "the owner still redeems it: {first}");
    let at = first["access_token"].as_str().unwrap();
    // After redemption: the same presentations are no replay; the owner's tokens live on.
    wrong_presentations(&http, &code, redirect).await;
    assert_eq!(http.introspect(at).await["active"], true);
    let (s, next) = http
        .refresh("webapp", first["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(s, 200, "{next}");
    // The owner replaying it is a replay (RFC 6749 4.1.2): what it issued is revoked.
    let (s, t) = http.exchange("webapp", &code, redirect).await;
    assert_eq!((s, t["error"].as_str()), (400, Some("invalid_grant")));
    assert_eq!(http.introspect(at).await["active"], false);
    let (s, _) = http
        .refresh("webapp", next["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(s, 400, "the grant's refresh tokens are gone");
}

async fn forged_tokens_are_inactive_everywhere(b: Backend) {
    let Some(app) = spawn_provider(b, &[]).await else {
        return;
    };
    let http = Http::new(&app);
    let mut br = signed_in(&app).await;
    let code = code_for(&mut br, "webapp", "https://webapp.example/cb").await;
    let (_, t) = http
        .exchange("webapp", &code, "https://webapp.example/cb")
        .await;
    let at = t["access_token"].as_str().unwrap();
    let parts: Vec<&str> = at.split('.').collect();
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["sub"] = Value::String("someone-else".into());
    let forged_payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let tampered = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"at+jwt"}"#),
        forged_payload
    );
    for bad in [tampered.as_str(), none.as_str(), "not-a-token", "a.b.c", ""] {
        assert_eq!(http.introspect(bad).await["active"], false, "{bad}");
        let (s, h, _) = http.get_json("/userinfo", Some(bad)).await;
        assert_eq!(s, 401, "{bad}");
        assert!(
            h.get("www-authenticate")
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("Bearer"),
            "{bad}"
        );
    }
    let (s, h, _) = http.get_json("/userinfo", None).await;
    assert_eq!(s, 401);
    assert_eq!(h.get("www-authenticate").unwrap(), "Bearer");
}

async fn refresh_rotates_and_reuse_revokes_the_family(b: Backend) {
    let Some(app) = spawn_provider(b, &[]).await else {
        return;
    };
    let http = Http::new(&app);
    let mut br = signed_in(&app).await;
    let code = code_for(&mut br, "webapp", "https://webapp.example/cb").await;
    let (_, t0) = http
        .exchange("webapp", &code, "https://webapp.example/cb")
        .await;
    let r0 = t0["refresh_token"].as_str().unwrap().to_owned();
    // The same user in another browser: a separate session and token family.
    let mut other = signed_in(&app).await;
    let other_code = code_for(&mut other, "second", "https://second.example/cb").await;
    let (_, _, other_tokens) = http
        .post(
            "/token",
            None,
            &[
                ("grant_type", "authorization_code"),
                ("code", &other_code),
                ("redirect_uri", "https://second.example/cb"),
                ("code_verifier", VERIFIER),
                ("client_id", "second"),
                ("client_secret", SECRET),
            ],
        )
        .await;
    assert_eq!(
        http.introspect(other_tokens["access_token"].as_str().unwrap())
            .await["active"],
        true
    );
    let (s, t1) = http.refresh("webapp", &r0).await;
    assert_eq!(s, 200, "{t1}");
    let r1 = t1["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(r0, r1, "rotated");
    assert_eq!(http.introspect(&r1).await["active"], true);
    assert_eq!(http.introspect(&r0).await["active"], false, "spent");
    // A concurrent refresh within the grace window is answered (two tabs).
    let (s, t1b) = http.refresh("webapp", &r0).await;
    assert_eq!(s, 200, "{t1b}");
    // Past the grace window a spent token is reuse: the whole family goes, the live one too.
    app.clock.advance(10);
    let (s, t) = http.refresh("webapp", &r0).await;
    assert_eq!((s, t["error"].as_str()), (400, Some("invalid_grant")));
    for live in [&r1, t1b["refresh_token"].as_str().unwrap()] {
        let (s, t) = http.refresh("webapp", live).await;
        assert_eq!(
            (s, t["error"].as_str()),
            (400, Some("invalid_grant")),
            "{t}"
        );
    }
    // Reuse is a security event: everything of the user ends, the other browser's tokens too.
    assert_eq!(
        http.introspect(other_tokens["access_token"].as_str().unwrap())
            .await["active"],
        false
    );
    assert_eq!(
        other.get("/account").await.status,
        303,
        "the other session ended"
    );
    let (s, _, _) = http
        .post(
            "/token",
            None,
            &[
                ("grant_type", "refresh_token"),
                (
                    "refresh_token",
                    other_tokens["refresh_token"].as_str().unwrap(),
                ),
                ("client_id", "second"),
                ("client_secret", SECRET),
            ],
        )
        .await;
    assert_eq!(s, 400);
    // Signing in again works: the epoch only refuses what was issued before.
    let mut br = signed_in(&app).await;
    // Scope cannot widen; another client cannot use the token.
    let code = code_for(&mut br, "webapp", "https://webapp.example/cb").await;
    let (_, t) = http
        .exchange("webapp", &code, "https://webapp.example/cb")
        .await;
    let r = t["refresh_token"].as_str().unwrap();
    let (s, e) = http
        .token(
            "webapp",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", r),
                ("scope", "openid admin"),
            ],
        )
        .await;
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_scope")));
    let (s, _, e) = http
        .post(
            "/token",
            None,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", r),
                ("client_id", "second"),
                ("client_secret", SECRET),
            ],
        )
        .await;
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_grant")));
}

/// A code-flow refresh token of `webapp` on a fresh session of `app`.
async fn first_refresh_token(app: &TestApp) -> String {
    let http = Http::new(app);
    let mut br = signed_in(app).await;
    let code = code_for(&mut br, "webapp", "https://webapp.example/cb").await;
    let (s, t) = http
        .exchange("webapp", &code, "https://webapp.example/cb")
        .await;
    assert_eq!(s, 200, "{t}");
    t["refresh_token"].as_str().unwrap().to_owned()
}

async fn refresh_reuse_grace_is_measured_in_milliseconds(b: Backend) {
    // No grace: a replay in the same instant (the clock does not move) is reuse.
    let grace = [("CONCIERGE__PROVIDER__REFRESH_REUSE_GRACE", "0s")];
    let Some(app) = spawn_provider(b, &grace).await else {
        return;
    };
    let http = Http::new(&app);
    let r0 = first_refresh_token(&app).await;
    let (s, t1) = http.refresh("webapp", &r0).await;
    assert_eq!(s, 200, "{t1}");
    let (s, t) = http.refresh("webapp", &r0).await;
    assert_eq!(
        (s, t["error"].as_str()),
        (400, Some("invalid_grant")),
        "{t}"
    );
    let (s, _) = http
        .refresh("webapp", t1["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(s, 400, "reuse revoked the live token too");

    // A 2 s grace: a replay 1.5 s later is answered, 2.5 s later it is reuse.
    let grace = [("CONCIERGE__PROVIDER__REFRESH_REUSE_GRACE", "2s")];
    let Some(app) = spawn_provider(b, &grace).await else {
        return;
    };
    let http = Http::new(&app);
    let r0 = first_refresh_token(&app).await;
    let (s, t1) = http.refresh("webapp", &r0).await;
    assert_eq!(s, 200, "{t1}");
    app.clock.advance_millis(1_500);
    let (s, t) = http.refresh("webapp", &r0).await;
    assert_eq!(s, 200, "inside the grace: {t}");
    app.clock.advance_millis(1_000);
    let (s, t) = http.refresh("webapp", &r0).await;
    assert_eq!(
        (s, t["error"].as_str()),
        (400, Some("invalid_grant")),
        "{t}"
    );
    let (s, _) = http
        .refresh("webapp", t1["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(s, 400, "the family is gone");
}

async fn client_credentials_for_the_api_channel(b: Backend) {
    let Some(app) = spawn_provider(b, &[]).await else {
        return;
    };
    let http = Http::new(&app);
    let (s, t) = http
        .token(
            "service",
            &[
                ("grant_type", "client_credentials"),
                ("scope", "orders.read"),
            ],
        )
        .await;
    assert_eq!(s, 200, "{t}");
    assert!(t.get("refresh_token").is_none() && t.get("id_token").is_none());
    let claims = verify_with_jwks(&http, t["access_token"].as_str().unwrap()).await;
    assert_eq!(claims["sub"], "service");
    assert_eq!(claims["aud"], "https://api.example");
    assert_eq!(claims["scope"], "orders.read");
    assert_eq!(
        http.introspect(t["access_token"].as_str().unwrap()).await["active"],
        true
    );
    let (s, e) = http
        .token(
            "service",
            &[
                ("grant_type", "client_credentials"),
                ("scope", "orders.delete"),
            ],
        )
        .await;
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_scope")));
    let (s, e) = http
        .token("webapp", &[("grant_type", "client_credentials")])
        .await;
    assert_eq!((s, e["error"].as_str()), (400, Some("unauthorized_client")));
}

async fn revocation_and_logout_end_tokens(b: Backend) {
    let Some(app) = spawn_provider(b, &[]).await else {
        return;
    };
    let http = Http::new(&app);
    let mut br = signed_in(&app).await;
    let code = code_for(&mut br, "webapp", "https://webapp.example/cb").await;
    let (_, t) = http
        .exchange("webapp", &code, "https://webapp.example/cb")
        .await;
    let (at, rt) = (
        t["access_token"].as_str().unwrap(),
        t["refresh_token"].as_str().unwrap(),
    );
    // Introspected first (its signature is now cached): revocation must still win.
    assert_eq!(http.introspect(at).await["active"], true);
    let (s, _, _) = http
        .post("/revoke", Some(("webapp", SECRET)), &[("token", at)])
        .await;
    assert_eq!(s, 200);
    assert_eq!(http.introspect(at).await["active"], false);
    assert_eq!(http.get_json("/userinfo", Some(at)).await.0, 401);
    let (s, _, _) = http
        .post("/revoke", Some(("webapp", SECRET)), &[("token", rt)])
        .await;
    assert_eq!(s, 200);
    let (s, _) = http.refresh("webapp", rt).await;
    assert_eq!(s, 400);
    // Unknown tokens: still 200 (RFC 7009).
    assert_eq!(
        http.post("/revoke", Some(("webapp", SECRET)), &[("token", "nope")])
            .await
            .0,
        200
    );

    // Signing out of the broker ends the tokens issued in that session.
    let code = code_for(&mut br, "webapp", "https://webapp.example/cb").await;
    let (_, t) = http
        .exchange("webapp", &code, "https://webapp.example/cb")
        .await;
    let token = br.get("/account").await.field("csrf_token");
    br.post_form("/logout", &[("csrf_token", &token)]).await;
    assert_eq!(
        http.introspect(t["access_token"].as_str().unwrap()).await["active"],
        false
    );
    let (s, _) = http
        .refresh("webapp", t["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(s, 400);
}

async fn revoking_a_refresh_token_ends_its_grant(b: Backend) {
    let Some(app) = spawn_provider(b, &[]).await else {
        return;
    };
    let http = Http::new(&app);
    let mut br = signed_in(&app).await;
    let redirect = "https://webapp.example/cb";
    let code = code_for(&mut br, "webapp", redirect).await;
    let (_, t0) = http.exchange("webapp", &code, redirect).await;
    let (s, t1) = http
        .refresh("webapp", t0["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(s, 200, "{t1}");
    // Another grant in the same session.
    let code = code_for(&mut br, "webapp", redirect).await;
    let (_, other) = http.exchange("webapp", &code, redirect).await;
    let at = |t: &Value| t["access_token"].as_str().unwrap().to_owned();
    for t in [&t0, &t1, &other] {
        assert_eq!(http.introspect(&at(t)).await["active"], true);
    }
    let (s, _, _) = http
        .post(
            "/revoke",
            Some(("webapp", SECRET)),
            &[
                ("token", t1["refresh_token"].as_str().unwrap()),
                ("token_type_hint", "refresh_token"),
            ],
        )
        .await;
    assert_eq!(s, 200);
    // RFC 7009 2.1: the access tokens of that grant end with it, from the code and the refresh.
    for t in [&t0, &t1] {
        assert_eq!(http.introspect(&at(t)).await["active"], false);
        assert_eq!(http.get_json("/userinfo", Some(&at(t))).await.0, 401);
    }
    let (s, _) = http
        .refresh("webapp", t1["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(s, 400);
    // The other grant is untouched.
    assert_eq!(http.introspect(&at(&other)).await["active"], true);
    let (s, _) = http
        .refresh("webapp", other["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(s, 200);
}

async fn prompt_and_response_modes(b: Backend) {
    let Some(app) = spawn_provider(b, &[]).await else {
        return;
    };
    let mut anon = Browser::new(&app);
    let redirect = "https://webapp.example/cb";
    let res = anon
        .get(&authorize_path("webapp", redirect, &[("prompt", "none")]))
        .await;
    assert_eq!(
        param(&res.location.unwrap(), "error").as_deref(),
        Some("login_required")
    );
    let res: Page = anon
        .get(&authorize_path("webapp", redirect, &[("ui_locales", "ko")]))
        .await;
    // The sign-in page of the journey, at /authorize itself (no redirect); signing in on it ends
    // at the app.
    assert_eq!(res.status, 200, "{}", res.body);
    let page = res;
    assert!(page.body.contains("lang=\"ko\""));
    // Browsers apply form-action to the redirects after the form: the app's origin is allowed.
    let csp = page
        .headers
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("form-action 'self' https://webapp.example;"),
        "{csp}"
    );
    let res = anon
        .post_form(
            "/login",
            &[
                ("csrf_token", &page.field("csrf_token")),
                ("journey", &page.field("journey")),
                ("email", "demo@example.com"),
                ("password", "demo"),
            ],
        )
        .await;
    let back = res.location.unwrap();
    assert!(
        back.starts_with(redirect) && back.contains("code="),
        "{back}"
    );

    // prompt=login on a live session asks again.
    let res = anon
        .get(&authorize_path("webapp", redirect, &[("prompt", "login")]))
        .await;
    assert_eq!(res.status, 200, "the form is shown although signed in");
    assert!(res.body.contains("id=\"login-form\""), "{}", res.body);

    // form_post: an HTML form to the redirect URI, allowed by its own CSP.
    let res = anon
        .get(&authorize_path(
            "webapp",
            redirect,
            &[("response_mode", "form_post")],
        ))
        .await;
    assert_eq!(res.status, 200);
    assert!(
        res.body.contains("action=\"https://webapp.example/cb\""),
        "{}",
        res.body
    );
    assert!(res.body.contains("name=\"code\""));
    let csp = res
        .headers
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        csp.contains("form-action https://webapp.example") && !csp.contains("unsafe-inline"),
        "{csp}"
    );

    // max_age older than the session's auth_time: sign in again.
    app.clock.advance(120);
    let res = anon
        .get(&authorize_path("webapp", redirect, &[("max_age", "60")]))
        .await;
    assert_eq!(res.status, 200);
    assert!(res.body.contains("id=\"login-form\""), "{}", res.body);
}

async fn redirect_uri_may_be_left_out_at_both_ends(b: Backend) {
    let Some(app) = spawn_provider(b, &[]).await else {
        return;
    };
    let http = Http::new(&app);
    let mut br = signed_in(&app).await;
    let path = format!(
        "/authorize?response_type=code&client_id=webapp&scope=openid&code_challenge={}&code_challenge_method=S256",
        challenge(VERIFIER)
    );
    let take_code = |loc: String| param(&loc, "code").unwrap();
    let code = take_code(br.get(&path).await.location.unwrap());
    let (s, t) = http
        .token(
            "webapp",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("code_verifier", VERIFIER),
            ],
        )
        .await;
    assert_eq!(s, 200, "{t}");
    // Naming the one registered URI at the token endpoint is fine too; another is not.
    let code = take_code(br.get(&path).await.location.unwrap());
    let (s, t) = http
        .exchange("webapp", &code, "https://webapp.example/cb")
        .await;
    assert_eq!(s, 200, "{t}");
    let code = take_code(br.get(&path).await.location.unwrap());
    let (s, t) = http
        .exchange("webapp", &code, "https://webapp.example/other")
        .await;
    assert_eq!((s, t["error"].as_str()), (400, Some("invalid_grant")));
    // Named at /authorize: required at /token.
    let code = code_for(&mut br, "webapp", "https://webapp.example/cb").await;
    let (s, t) = http
        .token(
            "webapp",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("code_verifier", VERIFIER),
            ],
        )
        .await;
    assert_eq!((s, t["error"].as_str()), (400, Some("invalid_grant")));
}

per_backend_async!(
    redirect_uri_may_be_left_out_at_both_ends,
    discovery_and_cacheable_jwks,
    code_flow_with_pkce_issues_verifiable_tokens,
    a_second_client_gets_sso_and_its_own_algorithm,
    native_apps_use_any_loopback_port_and_must_use_pkce,
    untrusted_redirects_get_a_page_not_a_redirect,
    negative_token_requests_get_rfc_errors_and_no_tokens,
    a_code_is_spent_only_by_its_owner,
    forged_tokens_are_inactive_everywhere,
    refresh_rotates_and_reuse_revokes_the_family,
    refresh_reuse_grace_is_measured_in_milliseconds,
    client_credentials_for_the_api_channel,
    revocation_and_logout_end_tokens,
    revoking_a_refresh_token_ends_its_grant,
    prompt_and_response_modes,
);
