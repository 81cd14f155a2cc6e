//! Owns the oracles of the form and query targets: the strict urlencoded body check
//! (`well_formed`, `StrictForm`, `oauth_form`) and the `/authorize` query (`multi_params` into
//! `authorize::parse`) never panic, and a body `well_formed` lets through decodes exactly (no
//! replacement character, no repaired escape) the way the framework then decodes it.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

use actix_web::FromRequest;
use actix_web::http::header::CONTENT_TYPE;
use actix_web::test::TestRequest;
use concierge::domain::client::{Client, ClientConfig};
use concierge::provider::authorize;
use concierge::provider::clients::ClientRegistry;
use concierge::web::fuzzing::{StrictForm, multi_params, oauth_form, well_formed};

/// `%XX` and `+` decoded with nothing repaired; `None` where the bytes are not well-formed.
fn strict_decode(s: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'%' => {
                let hex = std::str::from_utf8(s.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Polls a future that needs no I/O to completion (an in-memory payload is ready at once).
fn ready<F: Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..16 {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return Some(v);
        }
    }
    None
}

/// A urlencoded body. `Err` names what went wrong.
pub fn body(data: &[u8]) -> Result<(), String> {
    let ok = well_formed(data);
    if ok {
        for pair in data.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
            let mut kv = pair.splitn(2, |b| *b == b'=');
            let (k, v) = (kv.next().unwrap_or_default(), kv.next().unwrap_or_default());
            let (Some(k), Some(v)) = (strict_decode(k), strict_decode(v)) else {
                return Err(format!("well_formed accepts the undecodable pair {pair:?}"));
            };
            let framework: Vec<(String, String)> = url::form_urlencoded::parse(pair)
                .map(|(a, b)| (a.into_owned(), b.into_owned()))
                .collect();
            if framework != [(k.clone(), v.clone())] {
                return Err(format!(
                    "well_formed accepts {pair:?}: decoded strictly {:?}, by the framework {framework:?}",
                    (k, v)
                ));
            }
        }
    }
    let (req, mut payload) = TestRequest::post()
        .insert_header((CONTENT_TYPE, "application/x-www-form-urlencoded"))
        .set_payload(data.to_vec())
        .to_http_parts();
    if let Some(parsed) = ready(StrictForm::<BTreeMap<String, String>>::from_request(
        &req,
        &mut payload,
    )) && parsed.is_ok()
        && !ok
    {
        return Err("StrictForm accepts a body well_formed refuses".into());
    }
    let form = oauth_form(&req, data);
    if form.is_ok() && !ok {
        return Err("oauth_form accepts a body well_formed refuses".into());
    }
    let _ = multi_params(data);
    Ok(())
}

fn registry() -> &'static ClientRegistry {
    static REGISTRY: OnceLock<ClientRegistry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let clients = [
            r#"{"id":"app","secret_sha256":"0000000000000000000000000000000000000000000000000000000000000000","redirect_uris":["https://app.example/cb","https://app.example/other"]}"#,
            r#"{"id":"spa","public":true,"redirect_uris":["http://127.0.0.1/cb"]}"#,
        ]
        .iter()
        .map(|json| {
            let cfg: ClientConfig = serde_json::from_str(json).expect("client config");
            Client::parse(&cfg).expect("client")
        })
        .collect();
        ClientRegistry::new(clients, crate::store::store())
    })
}

/// An `/authorize` query string.
pub fn authorize_query(data: &[u8]) -> Result<(), String> {
    let q = multi_params(data);
    let _ = authorize::parse(&q, registry());
    Ok(())
}
