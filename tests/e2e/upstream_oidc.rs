//! Hostile upstream OpenID providers: an OP under the test's control answers the broker's code
//! exchange with a forged or wrong ID token. Each is refused with a clear page, no session and
//! no user; the same OP with a correct token signs in (so the test can fail).

use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::sign::Signer;
use serde_json::{Value, json};

use concierge::storage::Store;

use crate::helpers::{Browser, Page, START, TestApp, spawn_provider_with};
use crate::per_backend_async;
use crate::support::Backend;
use concierge::startup::{DEMO_EMAIL, DEMO_PASSWORD};

/// What the fake OP puts in the next ID token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Forgery {
    None,
    BadSignature,
    OtherKey,
    WrongAudience,
    WrongIssuer,
    WrongNonce,
    Expired,
    IssuedInTheFuture,
    AlgNone,
    NoIdToken,
    /// Signed by a key under a kid the upstream does not publish, even after a re-fetch.
    UnpublishedKey,
    /// Signed by the upstream's new key (kid k2), published only after the broker cached the
    /// JWKS: the broker must fetch the keys again.
    RotatedKey,
    /// `nbf` an hour ahead (RFC 7519 4.1.5).
    NotYetValid,
    /// `azp` names another client (OIDC Core 3.1.3.7 step 5).
    OtherAzp,
    /// A validly signed 1.4 MB ID token, its token response sent with a Content-Length.
    Huge,
    /// The same, streamed in chunks without a Content-Length.
    HugeChunked,
    /// `email_verified: "true"` (a string, not the boolean OIDC Core 5.1 says) for the email of
    /// an existing account: signs in, but the email counts as unverified (no linking).
    StringVerified,
    /// `email_verified: false` for the email of the existing demo account (subject
    /// `unverified-demo`): the account must be proven before it is linked.
    UnverifiedLocalEmail,
    /// `amr: ["pwd", "mfa"]` for a new identity (subject `claims-mfa`): the upstream says it
    /// did a second factor.
    ClaimsMfa,
    /// A new identity (subject `kept-claims`, `pat@corp.example`) with claims an operator may
    /// keep: `employee_id: "demo"`, `level: 7`, `roles: ["a"]`.
    KeptClaims,
}

/// What the fake OP's token endpoint received.
#[derive(Clone, Debug, Default)]
struct TokenRequest {
    authorization: Option<String>,
    form: std::collections::BTreeMap<String, String>,
}

pub(crate) struct FakeOp {
    pub(crate) issuer: String,
    key: PKey<Private>,
    other: PKey<Private>,
    next: Mutex<(Forgery, String)>,
    rotated: std::sync::atomic::AtomicBool,
    /// Advertise `authorization_response_iss_parameter_supported` (RFC 9207).
    iss_parameter: bool,
    token_requests: Mutex<Vec<TokenRequest>>,
}

fn b64(v: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(v)
}

impl FakeOp {
    fn sign(&self, key: &PKey<Private>, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let mut s = Signer::new(MessageDigest::sha256(), key).unwrap();
        s.update(input.as_bytes()).unwrap();
        format!("{input}.{}", b64(&s.sign_to_vec().unwrap()))
    }

    fn id_token(&self) -> Option<String> {
        let (forgery, nonce) = self.next.lock().unwrap().clone();
        let mut claims = json!({
            "iss": self.issuer, "sub": "evil-user", "aud": "concierge", "iat": START,
            "exp": START + 300, "nonce": nonce, "email": "victim@example.com",
            "email_verified": true, "groups": ["staff", "admins"], "department": "research",
        });
        let header = json!({"alg": "RS256", "kid": "k1", "typ": "JWT"});
        match forgery {
            Forgery::WrongAudience => claims["aud"] = json!("someone-else"),
            Forgery::WrongIssuer => claims["iss"] = json!("https://evil.example"),
            Forgery::WrongNonce => claims["nonce"] = json!("not-the-nonce"),
            Forgery::Expired => {
                claims["iat"] = json!(START - 1000);
                claims["exp"] = json!(START - 500);
            }
            Forgery::IssuedInTheFuture => claims["iat"] = json!(START + 3600),
            Forgery::NotYetValid => claims["nbf"] = json!(START + 3600),
            Forgery::OtherAzp => claims["azp"] = json!("someone-else"),
            Forgery::Huge | Forgery::HugeChunked => {
                claims["pad"] = json!("A".repeat(1_400_000));
            }
            Forgery::StringVerified => {
                claims["sub"] = json!("string-verified");
                claims["email"] = json!("demo@example.com");
                claims["email_verified"] = json!("true");
            }
            Forgery::KeptClaims => {
                claims["sub"] = json!("kept-claims");
                claims["email"] = json!("pat@corp.example");
                claims["employee_id"] = json!("demo");
                claims["level"] = json!(7);
                claims["roles"] = json!(["a"]);
            }
            Forgery::ClaimsMfa => {
                claims["sub"] = json!("claims-mfa");
                claims["email"] = json!("mfa-claimer@example.com");
                claims["amr"] = json!(["pwd", "mfa"]);
            }
            Forgery::UnverifiedLocalEmail => {
                claims["sub"] = json!("unverified-demo");
                claims["email"] = json!("demo@example.com");
                claims["email_verified"] = json!(false);
            }
            Forgery::NoIdToken => return None,
            _ => {}
        }
        Some(match forgery {
            Forgery::AlgNone => format!(
                "{}.{}.",
                b64(json!({"alg": "none", "kid": "k1"}).to_string().as_bytes()),
                b64(claims.to_string().as_bytes())
            ),
            Forgery::OtherKey => self.sign(&self.other, &header, &claims),
            Forgery::UnpublishedKey => self.sign(
                &self.other,
                &json!({"alg": "RS256", "kid": "k9", "typ": "JWT"}),
                &claims,
            ),
            Forgery::RotatedKey => self.sign(
                &self.other,
                &json!({"alg": "RS256", "kid": "k2", "typ": "JWT"}),
                &claims,
            ),
            Forgery::BadSignature => {
                let t = self.sign(&self.key, &header, &claims);
                // The signature of other claims under the right key.
                let (hp, _) = t.rsplit_once('.').unwrap();
                let good = self.sign(&self.key, &header, &json!({"sub": "x"}));
                format!("{hp}.{}", good.rsplit_once('.').unwrap().1)
            }
            _ => self.sign(&self.key, &header, &claims),
        })
    }

    fn jwks(&self) -> Value {
        let jwk = |key: &PKey<Private>, kid: &str| {
            let rsa = key.rsa().unwrap();
            json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                "n": b64(&rsa.n().to_vec()), "e": b64(&rsa.e().to_vec())})
        };
        let mut keys = vec![jwk(&self.key, "k1")];
        if self.rotated.load(std::sync::atomic::Ordering::SeqCst) {
            keys.push(jwk(&self.other, "k2"));
        }
        json!({ "keys": keys })
    }
}

pub(crate) async fn start_fake_op() -> Arc<FakeOp> {
    start_fake_op_with(false).await
}

async fn start_fake_op_with(iss_parameter: bool) -> Arc<FakeOp> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let issuer = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let key = || PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let op = Arc::new(FakeOp {
        issuer: issuer.clone(),
        key: key(),
        other: key(),
        next: Mutex::new((Forgery::None, String::new())),
        rotated: std::sync::atomic::AtomicBool::new(false),
        iss_parameter,
        token_requests: Mutex::new(Vec::new()),
    });
    let shared = op.clone();
    let server = actix_web::HttpServer::new(move || {
        let op = shared.clone();
        let (o1, o2, o3) = (op.clone(), op.clone(), op.clone());
        actix_web::App::new()
            .route(
                "/.well-known/openid-configuration",
                actix_web::web::get().to(move || {
                    let i = o1.issuer.clone();
                    let iss_parameter = o1.iss_parameter;
                    async move {
                        actix_web::HttpResponse::Ok().json(json!({
                            "authorization_response_iss_parameter_supported": iss_parameter,
                            "issuer": i,
                            "authorization_endpoint": format!("{i}/authorize"),
                            "token_endpoint": format!("{i}/token"),
                            "jwks_uri": format!("{i}/jwks"),
                            "end_session_endpoint": format!("{i}/session/end"),
                            "response_types_supported": ["code"],
                            "subject_types_supported": ["public"],
                            "id_token_signing_alg_values_supported": ["RS256"],
                        }))
                    }
                }),
            )
            .route(
                "/jwks",
                actix_web::web::get().to(move || {
                    let j = o2.jwks();
                    async move { actix_web::HttpResponse::Ok().json(j) }
                }),
            )
            .route(
                "/token",
                actix_web::web::post().to(
                    move |req: actix_web::HttpRequest,
                          form: actix_web::web::Form<
                        std::collections::BTreeMap<String, String>,
                    >| {
                        o3.token_requests.lock().unwrap().push(TokenRequest {
                            authorization: req
                                .headers()
                                .get("authorization")
                                .map(|v| v.to_str().unwrap().to_owned()),
                            form: form.into_inner(),
                        });
                        let mut body = json!({"access_token": "at", "token_type": "Bearer",
                            "expires_in": 300});
                        if let Some(t) = o3.id_token() {
                            body["id_token"] = json!(t);
                        }
                        let chunked = o3.next.lock().unwrap().0 == Forgery::HugeChunked;
                        async move {
                            if chunked {
                                let bytes = actix_web::web::Bytes::from(body.to_string());
                                let chunks: Vec<Result<_, actix_web::Error>> = bytes
                                    .chunks(16 * 1024)
                                    .map(|c| Ok(actix_web::web::Bytes::copy_from_slice(c)))
                                    .collect();
                                actix_web::HttpResponse::Ok()
                                    .content_type("application/json")
                                    .streaming(futures_util::stream::iter(chunks))
                            } else {
                                actix_web::HttpResponse::Ok().json(body)
                            }
                        }
                    },
                ),
            )
    })
    .listen(listener)
    .unwrap()
    .workers(1)
    .disable_signals()
    .run();
    tokio::spawn(server);
    op
}

fn param(location: &str, name: &str) -> String {
    url::Url::parse(location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .unwrap()
        .1
        .into_owned()
}

async fn forged_id_tokens_from_an_upstream_are_refused(b: Backend) {
    let op = start_fake_op().await;
    let extra = format!(
        "[[upstreams]]\nid = \"evil\"\nkind = \"oidc\"\nissuer = \"{}\"\nclient_id = \"concierge\"\nclient_secret = \"s3cret\"\nlink_by_verified_email = true\n",
        op.issuer
    );
    let Some(app) = spawn_provider_with(b, &[], &extra).await else {
        return;
    };
    for forgery in [
        Forgery::BadSignature,
        Forgery::OtherKey,
        Forgery::WrongAudience,
        Forgery::WrongIssuer,
        Forgery::WrongNonce,
        Forgery::Expired,
        Forgery::IssuedInTheFuture,
        Forgery::AlgNone,
        Forgery::NoIdToken,
        Forgery::UnpublishedKey,
        Forgery::NotYetValid,
        Forgery::OtherAzp,
        Forgery::Huge,
        Forgery::HugeChunked,
        Forgery::StringVerified,
        Forgery::None,
        Forgery::RotatedKey,
    ] {
        if forgery == Forgery::RotatedKey {
            op.rotated.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        let mut br = Browser::new(&app);
        // In the control case the browser already has a session, which the sign-in replaces.
        let previous = if forgery == Forgery::None {
            assert_eq!(br.login("demo@example.com", "demo").await.status, 303);
            br.session_cookie()
        } else {
            None
        };
        let start = br.get("/upstream/evil/start").await;
        assert_eq!(start.status, 303, "{forgery:?}");
        let to = start.location.unwrap();
        assert!(to.starts_with(&format!("{}/authorize?", op.issuer)), "{to}");
        assert_eq!(param(&to, "code_challenge_method"), "S256");
        let state = param(&to, "state");
        *op.next.lock().unwrap() = (forgery, param(&to, "nonce"));
        let back = br
            .get(&format!("/upstream/evil/callback?code=c&state={state}"))
            .await;
        if forgery == Forgery::StringVerified {
            // The token response parses and the login goes on, but a string is no verification:
            // the existing account with that email is not taken over, the user must prove it.
            assert_eq!(back.status, 409, "{}", back.body);
            assert!(back.body.contains("demo@example.com"));
            assert!(br.session_cookie().is_none());
            assert!(
                app.store
                    .upstream_link("evil", "string-verified")
                    .unwrap()
                    .is_none()
            );
        } else if forgery == Forgery::RotatedKey {
            assert_eq!(back.status, 303, "new upstream key fetched: {}", back.body);
            assert!(br.session_cookie().is_some());
        } else if forgery == Forgery::None {
            assert_eq!(back.status, 303, "the control case signs in: {}", back.body);
            assert!(br.session_cookie().is_some());
            // The default client authentication: HTTP Basic (RFC 6749 2.3.1), no secret in the
            // body.
            let sent = op.token_requests.lock().unwrap().last().cloned().unwrap();
            assert_eq!(
                sent.authorization.as_deref(),
                Some(format!("Basic {}", STANDARD.encode("concierge:s3cret")).as_str())
            );
            assert!(!sent.form.contains_key("client_secret"));
            assert_eq!(sent.form["code_verifier"].len(), 43);
            let old = concierge::session::SessionToken::key_of(&previous.unwrap()).unwrap();
            assert!(
                app.store.session(&old).unwrap().is_none(),
                "the browser's previous session ended"
            );
            // The state is single use: the same callback again is refused.
            let replay = Browser::new(&app)
                .get(&format!("/upstream/evil/callback?code=c&state={state}"))
                .await;
            assert_eq!(replay.status, 400);
        } else {
            assert_eq!(back.status, 400, "{forgery:?}: {}", back.body);
            assert!(
                back.body.contains("login-error"),
                "{forgery:?}: a clear page"
            );
            assert!(br.session_cookie().is_none(), "{forgery:?}: no session");
            let email = concierge::domain::Email::parse("victim@example.com").unwrap();
            assert!(
                app.store.user_by_email(&email).unwrap().is_none(),
                "{forgery:?}: no user created"
            );
        }
    }

    // A callback from another browser (no binding cookie) is refused even with a good token.
    let mut starter = Browser::new(&app);
    let to = starter.get("/upstream/evil/start").await.location.unwrap();
    *op.next.lock().unwrap() = (Forgery::None, param(&to, "nonce"));
    let mut other = Browser::new(&app);
    let res = other
        .get(&format!(
            "/upstream/evil/callback?code=c&state={}",
            param(&to, "state")
        ))
        .await;
    assert_eq!(res.status, 400);
    assert!(other.session_cookie().is_none());

    // An upstream that refuses (access_denied) gets a clear page.
    let mut br = Browser::new(&app);
    let to = br.get("/upstream/evil/start").await.location.unwrap();
    let res = br
        .get(&format!(
            "/upstream/evil/callback?error=access_denied&state={}",
            param(&to, "state")
        ))
        .await;
    assert_eq!(res.status, 403);
    assert!(res.body.contains("login-error"));
}

async fn home_realm_discovery_routes_by_domain_and_hints(b: Backend) {
    let op = start_fake_op().await;
    let extra = format!(
        "[[upstreams]]\nid = \"corp\"\nkind = \"oidc\"\nissuer = \"{}\"\nclient_id = \"concierge\"\nclient_secret = \"s3cret\"\ndomains = [\"Corp.Example\"]\n",
        op.issuer
    );
    let Some(app) = spawn_provider_with(b, &[], &extra).await else {
        return;
    };
    let mut br = Browser::new(&app);
    let page = br.get("/login?return_to=%2Faccount").await;
    assert!(
        !page.body.contains("current-password\" required"),
        "email first: no password needed"
    );
    // The email alone, of a routed domain: off to that upstream, with the hint.
    let res = br
        .post_form(
            "/login",
            &[
                ("csrf_token", &page.field("csrf_token")),
                ("email", "Pat@corp.example"),
                ("return_to", "/account"),
            ],
        )
        .await;
    assert_eq!(res.status, 303);
    let to = res.location.unwrap();
    // The journey goes on at the upstream (the hint is kept in it, not in the URL).
    assert!(to.starts_with("/upstream/corp/start?journey="), "{to}");
    let upstream = br.get(&to).await.location.unwrap();
    assert_eq!(param(&upstream, "login_hint"), "pat@corp.example");
    // Other domains still use the password form.
    let res = br
        .post_form(
            "/login",
            &[
                ("csrf_token", &page.field("csrf_token")),
                ("email", "demo@example.com"),
                ("password", "demo"),
            ],
        )
        .await;
    assert_eq!(res.location.as_deref(), Some("/account"));
    // login_hint and idp_hint skip the choice.
    let mut fresh = Browser::new(&app);
    let res = fresh.get("/login?login_hint=someone%40corp.example").await;
    assert!(res.location.unwrap().starts_with("/upstream/corp/start?"));
    let res = fresh.get("/login?idp_hint=corp").await;
    assert!(res.location.unwrap().starts_with("/upstream/corp/start"));
    let res = fresh.get("/login?idp_hint=nope").await;
    assert_eq!(res.status, 200, "an unknown idp_hint is ignored");
    let res = fresh
        .get("/authorize?response_type=code&client_id=webapp&redirect_uri=https%3A%2F%2Fwebapp.example%2Fcb&scope=openid&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256&idp_hint=corp")
        .await;
    // idp_hint at /authorize: straight on to the upstream's start, within the journey.
    let start = res.location.unwrap();
    assert!(
        start.starts_with("/upstream/corp/start?journey="),
        "{start}"
    );
}

/// The query parameters of a redirect.
fn params(location: &str) -> std::collections::BTreeMap<String, String> {
    url::Url::parse(location)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

async fn upstream_errors_go_back_to_the_app(b: Backend) {
    let op = start_fake_op().await;
    // `down` is an upstream nobody answers for.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let extra = format!(
        concat!(
            "[[upstreams]]\nid = \"corp\"\nkind = \"oidc\"\nissuer = \"{}\"\nclient_id = \"concierge\"\nclient_secret = \"s3cret\"\n",
            "[[upstreams]]\nid = \"down\"\nkind = \"oidc\"\nissuer = \"http://127.0.0.1:{}\"\nclient_id = \"concierge\"\nclient_secret = \"s3cret\"\n"
        ),
        op.issuer, dead_port
    );
    let Some(app) = spawn_provider_with(b, &[], &extra).await else {
        return;
    };
    let authorize = |idp: &str| {
        format!(
            "/authorize?response_type=code&client_id=webapp&redirect_uri=https%3A%2F%2Fwebapp.example%2Fcb&scope=openid&state=st-{idp}&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256&idp_hint={idp}"
        )
    };
    // The user says no at the upstream: the app gets access_denied with its state and iss.
    let mut br = Browser::new(&app);
    // idp_hint: /authorize sends the browser straight on to the upstream's start.
    let start = br.get(&authorize("corp")).await.location.unwrap();
    let to = br.get(&start).await.location.unwrap();
    let back = br
        .get(&format!(
            "/upstream/corp/callback?error=access_denied&error_description=no&state={}",
            param(&to, "state")
        ))
        .await;
    assert_eq!(back.status, 302, "{}", back.body);
    let at = back.location.unwrap();
    assert!(at.starts_with("https://webapp.example/cb?"), "{at}");
    let p = params(&at);
    assert_eq!(p["error"], "access_denied");
    assert_eq!(p["state"], "st-corp");
    let discovery: serde_json::Value =
        serde_json::from_str(&br.get("/.well-known/openid-configuration").await.body).unwrap();
    assert_eq!(p["iss"], discovery["issuer"].as_str().unwrap());
    assert!(!p.contains_key("code"));
    assert!(br.session_cookie().is_none());

    // An upstream error that is the broker's setup (invalid_scope) is a server_error.
    // idp_hint: /authorize sends the browser straight on to the upstream's start.
    let start = br.get(&authorize("corp")).await.location.unwrap();
    let to = br.get(&start).await.location.unwrap();
    let back = br
        .get(&format!(
            "/upstream/corp/callback?error=invalid_scope&state={}",
            param(&to, "state")
        ))
        .await;
    assert_eq!(params(&back.location.unwrap())["error"], "server_error");

    // An upstream that cannot be reached: temporarily_unavailable.
    let start = br.get(&authorize("down")).await.location.unwrap();
    let back = br.get(&start).await;
    assert_eq!(back.status, 302, "{}", back.body);
    let p = params(&back.location.unwrap());
    assert_eq!(
        (p["error"].as_str(), p["state"].as_str()),
        ("temporarily_unavailable", "st-down")
    );

    // Without an app (signing in to the broker itself) it is a page.
    let back = Browser::new(&app).get("/upstream/down/start").await;
    assert_eq!(back.status, 502);
    assert!(back.body.contains("login-error"));
}

/// The reasons of the `login_failed` audit events, oldest first.
async fn login_failures(app: &crate::helpers::TestApp) -> Vec<String> {
    crate::control::audit_events(app, "login_failed")
        .await
        .iter()
        .map(|e| e["reason"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// Two OIDC upstreams on the fake OP, and the admin client (to read the audit trail).
async fn two_upstreams(b: Backend, op: &FakeOp, env: &[(&str, &str)]) -> Option<TestApp> {
    let extra = format!(
        concat!(
            "[[upstreams]]\nid = \"evil\"\nkind = \"oidc\"\nissuer = \"{i}\"\nclient_id = \"concierge\"\nclient_secret = \"s3cret\"\n",
            "[[upstreams]]\nid = \"corp\"\nkind = \"oidc\"\nissuer = \"{i}\"\nclient_id = \"concierge\"\nclient_secret = \"s3cret\"\n",
            "{ops}"
        ),
        i = op.issuer,
        ops = crate::control::OPS_CLIENTS,
    );
    spawn_provider_with(b, env, &extra).await
}

async fn callbacks_that_match_no_pending_login_are_refused_and_audited(b: Backend) {
    let op = start_fake_op().await;
    let Some(app) = two_upstreams(b, &op, &[]).await else {
        return;
    };
    let refused = |res: &crate::helpers::Page| {
        assert_eq!(res.status, 400, "{}", res.body);
        assert!(res.body.contains("login-error"), "a clear page");
    };
    let mut expected = Vec::new();
    // No state at all.
    let mut br = Browser::new(&app);
    refused(&br.get("/upstream/evil/callback?code=c").await);
    expected.push("state_missing");
    // A state the broker never issued.
    refused(&br.get("/upstream/evil/callback?code=c&state=made-up").await);
    expected.push("state_unknown");
    // Another browser's state (no binding cookie here): refused, and the login is not spent
    // (issue #17: checked before it is taken): the browser that started it still signs in.
    let mut starter = Browser::new(&app);
    let to = starter.get("/upstream/evil/start").await.location.unwrap();
    let state = param(&to, "state");
    *op.next.lock().unwrap() = (Forgery::None, param(&to, "nonce"));
    let callback = format!("/upstream/evil/callback?code=c&state={state}");
    refused(&Browser::new(&app).get(&callback).await);
    expected.push("browser_mismatch");
    let res = starter.get(&callback).await;
    assert_eq!(res.status, 303, "the starter signs in: {}", res.body);
    assert!(starter.session_cookie().is_some());
    // A state issued for another upstream.
    let to = br.get("/upstream/corp/start").await.location.unwrap();
    refused(
        &br.get(&format!(
            "/upstream/evil/callback?code=c&state={}",
            param(&to, "state")
        ))
        .await,
    );
    expected.push("upstream_mismatch");
    // An expired one (10 minutes).
    let to = br.get("/upstream/evil/start").await.location.unwrap();
    app.clock.advance(601);
    refused(
        &br.get(&format!(
            "/upstream/evil/callback?code=c&state={}",
            param(&to, "state")
        ))
        .await,
    );
    expected.push("state_unknown");
    app.clock.set(START);
    // A used one: the control signs in, its replay (same browser) is refused.
    let to = br.get("/upstream/evil/start").await.location.unwrap();
    *op.next.lock().unwrap() = (Forgery::None, param(&to, "nonce"));
    let callback = format!(
        "/upstream/evil/callback?code=c&state={}",
        param(&to, "state")
    );
    let mut replayer = Browser {
        cookies: br.cookies.clone(),
        ..Browser::new(&app)
    };
    assert_eq!(br.get(&callback).await.status, 303, "the control signs in");
    refused(&replayer.get(&callback).await);
    expected.push("state_unknown");
    assert!(replayer.session_cookie().is_none());
    assert_eq!(login_failures(&app).await, expected);
}

async fn concurrent_callbacks_with_one_state_sign_in_once(b: Backend) {
    let op = start_fake_op().await;
    let limit = [("CONCIERGE__RATE_LIMIT__CALLBACK_PER_IP", "1000/1m")];
    let Some(app) = two_upstreams(b, &op, &limit).await else {
        return;
    };
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for round in 0..6 {
        let mut br = Browser::new(&app);
        let to = br.get("/upstream/evil/start").await.location.unwrap();
        *op.next.lock().unwrap() = (Forgery::None, param(&to, "nonce"));
        let url = format!(
            "{}/upstream/evil/callback?code=c&state={}",
            app.base,
            param(&to, "state")
        );
        let cookie = br
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        // The same callback (same browser, same state) eight times at once.
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let req = client.get(&url).header("cookie", &cookie);
            set.spawn(async move {
                let res = req.send().await.unwrap();
                let signed_in = res
                    .headers()
                    .get_all("set-cookie")
                    .iter()
                    .any(|c| c.to_str().unwrap().starts_with("concierge_session="));
                (res.status().as_u16(), signed_in)
            });
        }
        let mut answers = set.join_all().await;
        answers.sort();
        let mut want = vec![(303, true)];
        want.extend(std::iter::repeat_n((400, false), 7));
        want.sort();
        assert_eq!(answers, want, "round {round}: exactly one proceeds");
    }
    let failures = login_failures(&app).await;
    assert_eq!(failures.len(), 6 * 7);
    assert!(
        failures.iter().all(|r| r == "state_unknown"),
        "{failures:?}"
    );
    let user = app
        .store
        .upstream_link("evil", "evil-user")
        .unwrap()
        .unwrap();
    assert_eq!(app.store.sessions_of_user(&user).unwrap().len(), 6);
}

/// Signs in through upstream `id` and logs out at the broker through an app's RP-initiated
/// logout (confirmed, no hint): the broker sends the browser to the upstream's
/// end_session_endpoint. Returns the browser and the relay `state` sent there.
async fn logout_through(app: &TestApp, op: &FakeOp, id: &str) -> (Browser, String) {
    let (mut br, back) = sign_in_through(app, op, id, None).await;
    assert_eq!(back.status, 303, "{}", back.body);
    let bye = "post_logout_redirect_uri=https%3A%2F%2Fwebapp.example%2Fbye";
    let page = br
        .get(&format!(
            "/oidc/logout?client_id=webapp&{bye}&state=app-state"
        ))
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let out = br
        .post_form(
            "/oidc/logout",
            &[
                ("confirm", "1"),
                ("csrf_token", &page.field("csrf_token")),
                ("client_id", "webapp"),
                ("post_logout_redirect_uri", "https://webapp.example/bye"),
                ("state", "app-state"),
            ],
        )
        .await;
    assert_eq!(out.status, 303, "{}", out.body);
    let to = out.location.unwrap();
    assert!(
        to.starts_with(&format!("{}/session/end?", op.issuer)),
        "{to}"
    );
    let back = param(&to, "post_logout_redirect_uri");
    assert!(
        back.ends_with(&format!("/upstream/{id}/logged-out")),
        "{back}"
    );
    assert_eq!(br.get("/account").await.status, 303, "the session is over");
    (br, param(&to, "state"))
}

/// Where a logout through an upstream continues (OIDC RP-initiated logout, `state` as relay):
/// to the app's post-logout redirect URI once, for that upstream only, within ten minutes; else
/// /signed-out. Logout continuations and pending logins are apart: a relay presented as a login
/// `state` neither signs in nor spends the logout, a login `state` presented as a relay does not
/// spend the login.
async fn a_logout_through_an_upstream_continues_once_where_it_was_going(b: Backend) {
    let op = start_fake_op().await;
    let limit = [("CONCIERGE__RATE_LIMIT__CALLBACK_PER_IP", "1000/1m")];
    let Some(app) = two_upstreams(b, &op, &limit).await else {
        return;
    };
    let continued = "https://webapp.example/bye?state=app-state";
    let (mut br, relay) = logout_through(&app, &op, "evil").await;
    // The relay as a login state: no pending login, and the logout is not spent by it.
    let res = br
        .get(&format!("/upstream/evil/callback?code=c&state={relay}"))
        .await;
    assert_eq!(res.status, 400, "{}", res.body);
    assert_eq!(login_failures(&app).await, ["state_unknown"]);
    assert!(br.session_cookie().is_none());
    // A made-up relay goes nowhere in particular.
    let res = br.get("/upstream/evil/logged-out?state=made-up").await;
    assert_eq!(res.location.as_deref(), Some("/signed-out"));
    // The upstream sends the browser back: on to the app, once.
    let back = format!("/upstream/evil/logged-out?state={relay}");
    assert_eq!(br.get(&back).await.location.as_deref(), Some(continued));
    assert_eq!(
        br.get(&back).await.location.as_deref(),
        Some("/signed-out"),
        "a relay is single use"
    );

    // A relay answered at another upstream: nowhere in particular, and spent.
    let (mut br, relay) = logout_through(&app, &op, "evil").await;
    let res = br
        .get(&format!("/upstream/corp/logged-out?state={relay}"))
        .await;
    assert_eq!(res.location.as_deref(), Some("/signed-out"));
    let res = br
        .get(&format!("/upstream/evil/logged-out?state={relay}"))
        .await;
    assert_eq!(res.location.as_deref(), Some("/signed-out"));

    // Ten minutes at the upstream is the limit.
    let (mut br, relay) = logout_through(&app, &op, "evil").await;
    app.clock.advance(601);
    let res = br
        .get(&format!("/upstream/evil/logged-out?state={relay}"))
        .await;
    assert_eq!(res.location.as_deref(), Some("/signed-out"));
    app.clock.set(START);

    // A pending login's state presented as a relay: the login is not spent by it.
    let mut br = Browser::new(&app);
    let to = br.get("/upstream/evil/start").await.location.unwrap();
    let state = param(&to, "state");
    let res = br
        .get(&format!("/upstream/evil/logged-out?state={state}"))
        .await;
    assert_eq!(res.location.as_deref(), Some("/signed-out"));
    *op.next.lock().unwrap() = (Forgery::None, param(&to, "nonce"));
    let res = br
        .get(&format!("/upstream/evil/callback?code=c&state={state}"))
        .await;
    assert_eq!(res.status, 303, "the login goes on: {}", res.body);
    assert!(br.session_cookie().is_some());
}

/// Comes back from the fake OP, to which the broker sent the browser with `to`, with
/// `forgery`'s identity: the broker's answer to its callback (at the `redirect_uri` it gave).
async fn back_from_op(op: &FakeOp, br: &mut Browser, to: &str, forgery: Forgery) -> Page {
    assert!(to.starts_with(&format!("{}/authorize?", op.issuer)), "{to}");
    *op.next.lock().unwrap() = (forgery, param(to, "nonce"));
    // The broker's public URL may name the host differently from the test's base: the path.
    let callback = url::Url::parse(&param(to, "redirect_uri")).unwrap();
    br.get(&format!(
        "{}?code=c&state={}",
        callback.path(),
        param(to, "state")
    ))
    .await
}

/// Starts a sign-in for `webapp` in `br`, picks upstream `id` on the login page and comes back
/// from the fake OP with `forgery`'s identity: the broker's answer to the callback.
pub(crate) async fn through_upstream_button(
    op: &FakeOp,
    br: &mut Browser,
    id: &str,
    forgery: Forgery,
) -> Page {
    let res = br
        .get(&crate::oidc::authorize_path_with(
            "webapp",
            "https://webapp.example/cb",
            &[],
        ))
        .await;
    let (_, login) = br.follow(res).await;
    assert_eq!(login.status, 200, "{}", login.body);
    let start = login
        .link(&format!("data-upstream=\"{id}\""))
        .unwrap_or_else(|| panic!("no button for {id}: {}", login.body));
    let res = br.get(&start).await;
    let (_, res) = br.follow(res).await;
    let to = res
        .location
        .unwrap_or_else(|| panic!("not sent to the upstream: {}", res.body));
    back_from_op(op, br, &to, forgery).await
}

/// The code in the redirect to `redirect` that ends `trail`, redeemed by `webapp`: the claims of
/// its ID token, signature verified against the broker's JWKS.
pub(crate) async fn redeemed(app: &TestApp, done: Page, trail: &[String], redirect: &str) -> Value {
    assert!(matches!(done.status, 302 | 303), "{trail:?}: {}", done.body);
    let at = done.location.unwrap();
    assert!(at.starts_with(redirect), "{trail:?} -> {at}");
    let code = param(&at, "code");
    let http = crate::oidc::Http::new(app);
    let (status, t) = http.exchange("webapp", &code, redirect).await;
    assert_eq!(status, 200, "{t}");
    Value::Object(crate::oidc::verify_with_jwks(&http, t["id_token"].as_str().unwrap()).await)
}

/// Issue #13, hole 3: the upstream identity is linked only when the whole sign-in succeeds.
/// An upstream vouches, unverified, for the email of a local account that has TOTP enrolled
/// (`[mfa]` required); an attacker who knows the password proves it on the link page, is asked
/// the second factor, fails it and gives up: no link row, and the same upstream identity lands
/// on the link page again, not signed in. The owner, with the factor, gets linked.
async fn a_failed_second_factor_after_the_link_proof_links_nothing(b: Backend) {
    let op = start_fake_op().await;
    let extra = format!(
        "[[upstreams]]\nid = \"corp\"\nkind = \"oidc\"\nissuer = \"{}\"\nclient_id = \"concierge\"\nclient_secret = \"s3cret\"\n{}",
        op.issuer,
        crate::mfa::mfa_config("required", &crate::mfa::totp_manifest(), "")
    );
    let Some(app) = spawn_provider_with(b, &[], &extra).await else {
        return;
    };
    let (secret, _) = crate::mfa::enrol_totp(&app, "/login", START).await;
    app.clock.advance(30);

    let mut attacker = Browser::new(&app);
    let link =
        through_upstream_button(&op, &mut attacker, "corp", Forgery::UnverifiedLocalEmail).await;
    assert_eq!(link.status, 409, "the link page: {}", link.body);
    assert!(link.body.contains(DEMO_EMAIL), "{}", link.body);
    // The password proves the account; the second factor is asked next.
    let res = attacker
        .submit(
            &link,
            "/login",
            &[("email", DEMO_EMAIL), ("password", DEMO_PASSWORD)],
        )
        .await;
    let (trail, page) = attacker.follow(res).await;
    assert_eq!(
        page.status, 200,
        "the factor is asked ({trail:?}): {}",
        page.body
    );
    assert!(attacker.session_cookie().is_none());
    let page = crate::mfa::totp_challenge(&mut attacker, page).await;
    let wrong = crate::mfa::wrong_totp(&secret, START + 30);
    let failed = attacker
        .submit(&page, "/login/mfa/answer", &[("code", &wrong)])
        .await;
    assert_eq!(failed.status, 401, "{}", failed.body);
    assert!(attacker.session_cookie().is_none());
    // The attacker gives up here.
    assert!(
        app.store
            .upstream_link("corp", "unverified-demo")
            .unwrap()
            .is_none(),
        "the upstream identity was linked to the account although its second factor failed"
    );
    let mut again = Browser::new(&app);
    let page =
        through_upstream_button(&op, &mut again, "corp", Forgery::UnverifiedLocalEmail).await;
    assert_eq!(
        page.status, 409,
        "the same upstream identity must prove the account again: {}",
        page.body
    );
    assert!(again.session_cookie().is_none());

    // The owner, with the password and the factor: signed in at the app, and linked.
    app.clock.advance(30);
    let mut owner = Browser::new(&app);
    let link =
        through_upstream_button(&op, &mut owner, "corp", Forgery::UnverifiedLocalEmail).await;
    assert_eq!(link.status, 409, "{}", link.body);
    let res = owner
        .submit(
            &link,
            "/login",
            &[("email", DEMO_EMAIL), ("password", DEMO_PASSWORD)],
        )
        .await;
    let (_, page) = owner.follow(res).await;
    let page = crate::mfa::totp_challenge(&mut owner, page).await;
    let res = owner
        .submit(
            &page,
            "/login/mfa/answer",
            &[("code", &crate::mfa::oathtool(&secret, START + 60))],
        )
        .await;
    let (trail, done) = owner.follow(res).await;
    let id = redeemed(&app, done, &trail, "https://webapp.example/cb").await;
    assert_eq!(id["email"], DEMO_EMAIL);
    let demo = app
        .store
        .user_by_email(&concierge::domain::Email::parse(DEMO_EMAIL).unwrap())
        .unwrap()
        .unwrap();
    assert!(
        app.store.upstream_link("corp", "unverified-demo").unwrap() == Some(demo.id),
        "linked once the sign-in succeeded"
    );
}

/// Issue #13, hole 6: a domain routed to an upstream and a local account in it. The upstream
/// vouches, unverified, for that account's email; the password on the link page finishes the
/// sign-in at the app (ID token verified) and links the identity, instead of sending the
/// browser to the routed upstream again.
async fn the_link_proof_on_a_routed_domain_ends_at_the_app(b: Backend) {
    let op = start_fake_op().await;
    let extra = format!(
        "[[upstreams]]\nid = \"corp\"\nkind = \"oidc\"\nissuer = \"{}\"\nclient_id = \"concierge\"\nclient_secret = \"s3cret\"\ndomains = [\"example.com\"]\n",
        op.issuer
    );
    let Some(app) = spawn_provider_with(b, &[], &extra).await else {
        return;
    };
    let redirect = "https://webapp.example/cb";
    let mut br = Browser::new(&app);
    let res = br
        .get(&crate::oidc::authorize_path_with("webapp", redirect, &[]))
        .await;
    let (_, login) = br.follow(res).await;
    assert_eq!(login.status, 200, "{}", login.body);
    // Email first: the address's domain is routed to the upstream.
    let res = br.submit(&login, "/login", &[("email", DEMO_EMAIL)]).await;
    let (trail, res) = br.follow(res).await;
    let to = res
        .location
        .unwrap_or_else(|| panic!("not routed ({trail:?}): {}", res.body));
    let link = back_from_op(&op, &mut br, &to, Forgery::UnverifiedLocalEmail).await;
    assert_eq!(link.status, 409, "the link page: {}", link.body);
    assert!(br.session_cookie().is_none());

    let res = br
        .submit(
            &link,
            "/login",
            &[("email", DEMO_EMAIL), ("password", DEMO_PASSWORD)],
        )
        .await;
    let (trail, done) = br.follow(res).await;
    let went = done.location.clone().unwrap_or_default();
    assert!(
        !went.starts_with(&op.issuer),
        "the proven password sends the browser to the routed upstream again: {trail:?} -> {went}"
    );
    let id = redeemed(&app, done, &trail, redirect).await;
    assert_eq!(id["email"], DEMO_EMAIL);
    let demo = app
        .store
        .user_by_email(&concierge::domain::Email::parse(DEMO_EMAIL).unwrap())
        .unwrap()
        .unwrap();
    assert!(
        app.store.upstream_link("corp", "unverified-demo").unwrap() == Some(demo.id),
        "the upstream identity is linked to the proven account"
    );
}

/// Issue #17, hole 1: an upstream's `amr` is evidence of what it says, not the broker's MFA. An
/// upstream not trusted for MFA says `amr: ["pwd","mfa"]`; with `[mfa]` required the broker asks
/// its own factor (here: sets one up, the new user has none) and issues no code. The control: the
/// same answer from an upstream trusted for MFA signs in at once, and the ID token says loa:2
/// with `mfa` in `amr`.
async fn an_untrusted_upstreams_mfa_claim_is_not_the_brokers_mfa(b: Backend) {
    let redirect = "https://webapp.example/cb";
    for trusted in [false, true] {
        let op = start_fake_op().await;
        let extra = format!(
            "[[upstreams]]\nid = \"corp\"\nkind = \"oidc\"\nissuer = \"{}\"\nclient_id = \"concierge\"\nclient_secret = \"s3cret\"\ntrust_upstream_mfa = {trusted}\n{}",
            op.issuer,
            crate::mfa::mfa_config("required", &crate::mfa::totp_manifest(), "")
        );
        let Some(app) = spawn_provider_with(b, &[], &extra).await else {
            return;
        };
        let mut br = Browser::new(&app);
        let page = through_upstream_button(&op, &mut br, "corp", Forgery::ClaimsMfa).await;
        let (trail, page) = br.follow(page).await;
        if trusted {
            let id = redeemed(&app, page, &trail, redirect).await;
            assert_eq!(id["acr"], "urn:concierge:loa:2", "{id}");
            assert!(
                id["amr"].as_array().unwrap().iter().any(|m| m == "mfa"),
                "{id}"
            );
            continue;
        }
        assert_eq!(
            page.status, 200,
            "the broker's own factor is asked ({trail:?}): {}",
            page.body
        );
        let went = page.location.clone().unwrap_or_default();
        assert!(!went.starts_with(redirect), "a code was issued: {went}");
        assert!(
            page.body.contains("data-factor=\"totp\""),
            "the factor page: {}",
            page.body
        );
        assert!(
            br.session_cookie().is_none(),
            "no session without the factor"
        );
    }
}

/// Issue #17, item 8: rendering the sign-in page does no network I/O for a routed upstream. Its
/// issuer is a server that accepts connections and never answers (a dead IdP): after the first
/// page (which may wait for the endpoint once, bounded), ten more renders of the email-first page
/// open no connection to it (the endpoint is known as unknown until the background refresh), and
/// each page still renders, without that upstream in `form-action`.
async fn a_dead_routed_upstream_is_not_asked_while_pages_render(b: Backend) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
    let extra = format!(
        "[[upstreams]]\nid = \"dead\"\nkind = \"oidc\"\nissuer = \"http://127.0.0.1:{port}\"\nclient_id = \"concierge\"\nclient_secret = \"s3cret\"\ndomains = [\"dead.example\"]\n"
    );
    let Some(app) = spawn_provider_with(b, &[], &extra).await else {
        return;
    };
    let mut br = Browser::new(&app);
    for _ in 0..2 {
        let page = br.get("/login").await;
        assert_eq!(page.status, 200, "{}", page.body);
    }
    let before = accepted.load(Ordering::SeqCst);
    for _ in 0..10 {
        let page = br.get("/login").await;
        assert_eq!(page.status, 200, "{}", page.body);
        let csp = page
            .headers
            .get("content-security-policy")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        assert!(!csp.contains(&format!("127.0.0.1:{port}")), "{csp}");
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        before,
        "rendering a page connected to the dead upstream"
    );
}

per_backend_async!(
    a_dead_routed_upstream_is_not_asked_while_pages_render,
    an_untrusted_upstreams_mfa_claim_is_not_the_brokers_mfa,
    a_logout_through_an_upstream_continues_once_where_it_was_going,
    a_failed_second_factor_after_the_link_proof_links_nothing,
    the_link_proof_on_a_routed_domain_ends_at_the_app,
    callbacks_that_match_no_pending_login_are_refused_and_audited,
    concurrent_callbacks_with_one_state_sign_in_once,
    upstream_groups_and_verified_email_reach_the_app,
    upstream_errors_go_back_to_the_app,
    a_missing_iss_is_refused_when_the_upstream_promises_it,
    upstream_client_authentication_is_configurable,
    forged_id_tokens_from_an_upstream_are_refused,
    home_realm_discovery_routes_by_domain_and_hints,
);

/// A sign-in through upstream `id` of `op` with a correct ID token; `iss` is put in the
/// authorization response when given. The callback's answer and the browser.
pub(crate) async fn sign_in_through(
    app: &crate::helpers::TestApp,
    op: &FakeOp,
    id: &str,
    iss: Option<&str>,
) -> (Browser, crate::helpers::Page) {
    let mut br = Browser::new(app);
    let to = br
        .get(&format!("/upstream/{id}/start"))
        .await
        .location
        .unwrap();
    *op.next.lock().unwrap() = (Forgery::None, param(&to, "nonce"));
    let mut callback = format!(
        "/upstream/{id}/callback?code=c&state={}",
        param(&to, "state")
    );
    if let Some(iss) = iss {
        callback.push_str(&format!("&iss={}", urlencoding(iss)));
    }
    let back = br.get(&callback).await;
    (br, back)
}

fn urlencoding(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// RFC 9207 2.4: an upstream that advertises `authorization_response_iss_parameter_supported`
/// puts `iss` in every authorization response; one without it is refused (a mix-up attack
/// strips it), one with it signs in.
async fn a_missing_iss_is_refused_when_the_upstream_promises_it(b: Backend) {
    let op = start_fake_op_with(true).await;
    let extra = format!(
        "[[upstreams]]\nid = \"strict\"\nkind = \"oidc\"\nissuer = \"{}\"\nclient_id = \"concierge\"\nclient_secret = \"s3cret\"\n",
        op.issuer
    );
    let Some(app) = spawn_provider_with(b, &[], &extra).await else {
        return;
    };
    let (br, back) = sign_in_through(&app, &op, "strict", None).await;
    assert_eq!(back.status, 400, "{}", back.body);
    assert!(back.body.contains("login-error"));
    assert!(br.session_cookie().is_none());
    assert!(
        op.token_requests.lock().unwrap().is_empty(),
        "refused before the code is spent"
    );
    let (br, back) = sign_in_through(&app, &op, "strict", Some(&op.issuer)).await;
    assert_eq!(back.status, 303, "{}", back.body);
    assert!(br.session_cookie().is_some());
}

/// `token_endpoint_auth_method`: client_secret_post puts the secret in the body (and no Basic
/// header); private_key_jwt sends an RFC 7523 assertion signed by the configured key (checked
/// here with its public half) and no secret at all.
async fn upstream_client_authentication_is_configurable(b: Backend) {
    let op = start_fake_op().await;
    let dir = tempfile::tempdir().unwrap();
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let key_file = dir.path().join("assertion.pem");
    std::fs::write(&key_file, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    let extra = format!(
        concat!(
            "[[upstreams]]\nid = \"post\"\nkind = \"oidc\"\nissuer = \"{0}\"\nclient_id = \"concierge\"\nclient_secret = \"s3cret\"\ntoken_endpoint_auth_method = \"client_secret_post\"\n",
            "[[upstreams]]\nid = \"pkjwt\"\nkind = \"oidc\"\nissuer = \"{0}\"\nclient_id = \"concierge\"\ntoken_endpoint_auth_method = \"private_key_jwt\"\nclient_assertion_key_file = {1:?}\nclient_assertion_kid = \"broker-1\"\nlink_by_verified_email = true\n",
        ),
        op.issuer,
        key_file.display().to_string()
    );
    let Some(app) = spawn_provider_with(b, &[], &extra).await else {
        return;
    };

    let (br, back) = sign_in_through(&app, &op, "post", None).await;
    assert_eq!(back.status, 303, "{}", back.body);
    assert!(br.session_cookie().is_some());
    let sent = op.token_requests.lock().unwrap().pop().unwrap();
    assert_eq!(sent.authorization, None);
    assert_eq!(sent.form["client_id"], "concierge");
    assert_eq!(sent.form["client_secret"], "s3cret");

    let (br, back) = sign_in_through(&app, &op, "pkjwt", None).await;
    assert_eq!(back.status, 303, "{}", back.body);
    assert!(br.session_cookie().is_some());
    let sent = op.token_requests.lock().unwrap().pop().unwrap();
    assert_eq!(sent.authorization, None);
    assert!(!sent.form.contains_key("client_secret"));
    assert_eq!(sent.form["client_id"], "concierge");
    assert_eq!(
        sent.form["client_assertion_type"],
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    );
    let assertion = &sent.form["client_assertion"];
    let parts: Vec<&str> = assertion.split('.').collect();
    assert_eq!(parts.len(), 3);
    let decode =
        |p: &str| -> Value { serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap() };
    let (header, claims) = (decode(parts[0]), decode(parts[1]));
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["kid"], "broker-1");
    let mut v = openssl::sign::Verifier::new(MessageDigest::sha256(), &key).unwrap();
    v.update(format!("{}.{}", parts[0], parts[1]).as_bytes())
        .unwrap();
    assert!(
        v.verify(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap())
            .unwrap(),
        "signed by the configured key"
    );
    assert_eq!(claims["iss"], "concierge");
    assert_eq!(claims["sub"], "concierge");
    assert_eq!(claims["aud"], format!("{}/token", op.issuer));
    assert!(claims["jti"].as_str().unwrap().len() >= 32);
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert_eq!(iat, START);
    assert!(exp > iat && exp <= iat + 300, "short-lived");
    // A fresh assertion each time (jti is single use at the OP).
    let (_, back) = sign_in_through(&app, &op, "pkjwt", None).await;
    assert_eq!(back.status, 303);
    let again = op.token_requests.lock().unwrap().pop().unwrap();
    assert_ne!(
        decode(again.form["client_assertion"].split('.').nth(1).unwrap())["jti"],
        claims["jti"]
    );
}

/// The claims of a JWT (the broker's own tokens; their signatures are tested in oidc.rs).
fn jwt_claims(token: &str) -> Value {
    serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap()
}

/// Groups from an upstream reach the app, with the `groups` scope only: in the ID token, the
/// access token and userinfo. The email an upstream trusted for it (`link_by_verified_email`)
/// verified is `email_verified: true` downstream.
async fn upstream_groups_and_verified_email_reach_the_app(b: Backend) {
    use sha2::Digest;
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk-extra-entropy";
    let op = start_fake_op().await;
    let extra = format!(
        "[[upstreams]]\nid = \"corp\"\nkind = \"oidc\"\nissuer = \"{}\"\nclient_id = \"concierge\"\nclient_secret = \"s3cret\"\nlink_by_verified_email = true\n",
        op.issuer
    );
    let Some(app) = spawn_provider_with(b, &[], &extra).await else {
        return;
    };
    let (mut br, back) = sign_in_through(&app, &op, "corp", None).await;
    assert_eq!(back.status, 303, "{}", back.body);
    let http = crate::oidc::Http::new(&app);
    let redirect = "https://webapp.example/cb";
    let challenge = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(VERIFIER.as_bytes()));
    for (scope, with_groups) in [("openid email groups", true), ("openid email", false)] {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("response_type", "code")
            .append_pair("client_id", "webapp")
            .append_pair("redirect_uri", redirect)
            .append_pair("scope", scope)
            .append_pair("state", "st")
            .append_pair("nonce", "n-1")
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        let res = br.get(&format!("/authorize?{}", q.finish())).await;
        assert_eq!(res.status, 302, "{}", res.body);
        let code = param(&res.location.unwrap(), "code");
        let (s, t) = http
            .token(
                "webapp",
                &[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", redirect),
                    ("code_verifier", VERIFIER),
                ],
            )
            .await;
        assert_eq!(s, 200, "{t}");
        let id = jwt_claims(t["id_token"].as_str().unwrap());
        let at = t["access_token"].as_str().unwrap();
        let access = jwt_claims(at);
        let (s, _, info) = http.get_json("/userinfo", Some(at)).await;
        assert_eq!(s, 200, "{info}");
        for (what, claims) in [
            ("ID token", &id),
            ("access token", &access),
            ("userinfo", &info),
        ] {
            if with_groups {
                assert_eq!(
                    claims["groups"],
                    json!(["staff", "admins"]),
                    "{what}: {claims}"
                );
            } else {
                assert!(
                    claims.get("groups").is_none(),
                    "{what} without the scope: {claims}"
                );
            }
        }
        assert_eq!(id["email"], "victim@example.com");
        assert_eq!(
            id["email_verified"], true,
            "verified upstream, trusted for it"
        );
        assert_eq!(info["email_verified"], true);
    }
    let discovery: Value =
        serde_json::from_str(&br.get("/.well-known/openid-configuration").await.body).unwrap();
    assert!(
        discovery["scopes_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("groups"))
    );
    assert!(
        discovery["claims_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("groups"))
    );

    // A local account: email_verified stays false (the broker does not verify emails).
    let mut local = Browser::new(&app);
    assert_eq!(local.login("demo@example.com", "demo").await.status, 303);
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    q.append_pair("response_type", "code")
        .append_pair("client_id", "webapp")
        .append_pair("redirect_uri", redirect)
        .append_pair("scope", "openid email groups")
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let res = local.get(&format!("/authorize?{}", q.finish())).await;
    let code = param(&res.location.unwrap(), "code");
    let (_, t) = http
        .token(
            "webapp",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", redirect),
                ("code_verifier", VERIFIER),
            ],
        )
        .await;
    let id = jwt_claims(t["id_token"].as_str().unwrap());
    assert_eq!(id["email_verified"], false);
    assert_eq!(id["groups"], json!([]));
}
