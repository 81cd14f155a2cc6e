//! Owns the `http` capability of contract 0.2: a plugin's request to a listed origin, the
//! addresses it connects to checked, host-held secrets substituted only where they are bound and
//! redacted from the response, bounded in size and by the call's deadline, and audited.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::host::{HttpSender, http as wit};
use crate::audit::{Auditor, Event, EventKind};
use crate::config::http::TrustAnchors;
use crate::config::mfa::{HttpGrant, Origin, PluginSecret, SecretSlot};

/// The most a plugin may send in one request (URL, headers and body).
pub const MAX_REQUEST: usize = 64 << 10;
/// The most the host reads of a response body; a larger one is refused, never buffered.
pub const MAX_RESPONSE: usize = 1 << 20;
const MAX_HEADERS: usize = 64;
/// What a secret's value becomes in a response.
pub const REDACTED: &str = "[redacted]";
/// Headers the host sets itself (framing, routing, connection).
const HOST_HEADERS: [&str; 8] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "proxy-authorization",
    "proxy-connection",
];

/// One plugin's `http` capability: its grant and a client that connects only to checked
/// addresses.
pub struct PluginHttp {
    plugin: String,
    grant: HttpGrant,
    client: reqwest::Client,
}

impl std::fmt::Debug for PluginHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHttp")
            .field("plugin", &self.plugin)
            .field("origins", &self.grant.origins.len())
            .finish_non_exhaustive()
    }
}

/// A resolved address that is neither public nor listed.
#[derive(Debug, thiserror::Error)]
#[error("address {0} is not public and no origin lists it")]
struct AddressRefused(IpAddr);

/// Resolves a host name and refuses the whole answer if any address is loopback, private,
/// link-local or otherwise not public, unless an origin of the plugin lists that very address;
/// the connection then goes to the addresses checked here (no second lookup).
struct CheckedResolver {
    listed: Arc<BTreeSet<IpAddr>>,
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let listed = Arc::clone(&self.listed);
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            if let Some(bad) = addrs
                .iter()
                .map(SocketAddr::ip)
                .find(|ip| !allowed(*ip, &listed))
            {
                return Err(
                    Box::new(AddressRefused(bad)) as Box<dyn std::error::Error + Send + Sync>
                );
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether the host may connect to `ip`: a public address, or one an origin lists.
pub fn allowed(ip: IpAddr, listed: &BTreeSet<IpAddr>) -> bool {
    let ip = canonical(ip);
    listed.contains(&ip) || is_public(ip)
}

/// Not loopback, private, link-local, shared, documentation, multicast or reserved.
pub fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (18..20).contains(&b))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    // NAT64 (64:ff9b::/96) reaches the IPv4 address it embeds.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [a, b] = s[6].to_be_bytes();
        let [c, d] = s[7].to_be_bytes();
        return is_public_v4(Ipv4Addr::new(a, b, c, d));
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00
        || (s[0] & 0xffc0) == 0xfe80
        || (s[0] & 0xffc0) == 0xfec0
        || (s[0] == 0x2001 && s[1] == 0x0db8)
        || ip.to_ipv4().is_some())
}

/// Why a request failed, and whether it was the host's policy (which fails the whole call).
fn refused(why: String) -> wit::HttpError {
    wit::HttpError::Refused(why)
}

/// A prepared request: what reqwest sends.
struct Prepared {
    method: reqwest::Method,
    url: url::Url,
    origin: Origin,
    headers: HeaderMap,
    body: Option<Vec<u8>>,
}

impl PluginHttp {
    /// The capability for a plugin's grant; https peers are checked with the broker's trust
    /// settings (`[http] ca_file`, the public roots, the system store).
    pub fn new(plugin: &str, grant: HttpGrant, trust: &TrustAnchors) -> Result<Self, String> {
        let listed: BTreeSet<IpAddr> = grant
            .origins
            .iter()
            .filter_map(Origin::ip)
            .map(canonical)
            .collect();
        let client = crate::http::builder(trust)
            // A system proxy would connect to an address nobody checked.
            .no_proxy()
            .dns_resolver(Arc::new(CheckedResolver {
                listed: Arc::new(listed),
            }))
            .build()
            .map_err(|e| crate::http::describe(&e))?;
        Ok(Self {
            plugin: plugin.to_owned(),
            grant,
            client,
        })
    }

    fn secret(
        &self,
        name: &str,
        slot: &SecretSlot,
        origin: &Origin,
    ) -> Result<&PluginSecret, wit::HttpError> {
        self.grant
            .secrets
            .iter()
            .find(|s| s.name == name && &s.slot == slot && s.origins.contains(origin))
            .ok_or_else(|| {
                let place = match slot {
                    SecretSlot::Header(h) => format!("header `{h}`"),
                    SecretSlot::Field(f) => format!("field `{}`", f.escape_debug()),
                };
                refused(format!(
                    "secret `{}` is not bound to {place} for {origin}",
                    name.escape_debug()
                ))
            })
    }

    /// Checks a request against the grant and writes the secrets it names where they are bound.
    fn prepare(&self, request: wit::Request) -> Result<Prepared, wit::HttpError> {
        let method = match request.method.as_str() {
            "GET" => reqwest::Method::GET,
            "POST" => reqwest::Method::POST,
            "PUT" => reqwest::Method::PUT,
            "PATCH" => reqwest::Method::PATCH,
            "DELETE" => reqwest::Method::DELETE,
            other => {
                return Err(refused(format!(
                    "method `{}` is not allowed",
                    other.escape_debug()
                )));
            }
        };
        let mut size = request.url.len();
        if size > MAX_REQUEST {
            return Err(wit::HttpError::TooLarge("the URL is too long".into()));
        }
        let url = url::Url::parse(&request.url)
            .map_err(|_| refused("the URL is not an absolute URL".into()))?;
        let origin = Origin::of(&url)
            .ok_or_else(|| refused("only http(s) URLs without user info".into()))?;
        if !self.grant.origins.contains(&origin) {
            return Err(refused(format!("origin {origin} is not listed")));
        }
        if request.headers.len() > MAX_HEADERS {
            return Err(refused(format!("at most {MAX_HEADERS} headers")));
        }
        let mut headers = HeaderMap::new();
        for (name, value) in request.headers {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| refused("a header name is malformed".into()))?;
            if HOST_HEADERS.contains(&header.as_str()) {
                return Err(refused(format!("header `{header}` is set by the host")));
            }
            let value = match value {
                wit::SecretRef::Literal(v) => HeaderValue::from_str(&v)
                    .map_err(|_| refused(format!("the value of `{header}` is malformed")))?,
                wit::SecretRef::Secret(n) => {
                    let s =
                        self.secret(&n, &SecretSlot::Header(header.as_str().to_owned()), &origin)?;
                    let mut v = HeaderValue::from_str(s.value.expose())
                        .map_err(|_| refused(format!("secret `{n}` is not a header value")))?;
                    v.set_sensitive(true);
                    v
                }
            };
            size += header.as_str().len() + value.len() + 4;
            headers.append(header, value);
        }
        let body = match request.body {
            wit::Body::None => None,
            wit::Body::Raw(bytes) => Some(bytes),
            wit::Body::Form(fields) => {
                let mut form = url::form_urlencoded::Serializer::new(String::new());
                for (name, value) in fields {
                    let value = match value {
                        wit::SecretRef::Literal(v) => v,
                        wit::SecretRef::Secret(n) => self
                            .secret(&n, &SecretSlot::Field(name.clone()), &origin)?
                            .value
                            .expose()
                            .to_owned(),
                    };
                    form.append_pair(&name, &value);
                }
                if !headers.contains_key(reqwest::header::CONTENT_TYPE) {
                    headers.insert(
                        reqwest::header::CONTENT_TYPE,
                        HeaderValue::from_static("application/x-www-form-urlencoded"),
                    );
                }
                Some(form.finish().into_bytes())
            }
        };
        size += body.as_ref().map_or(0, Vec::len);
        if size > MAX_REQUEST {
            return Err(wit::HttpError::TooLarge(format!(
                "requests are at most {MAX_REQUEST} bytes"
            )));
        }
        Ok(Prepared {
            method,
            url,
            origin,
            headers,
            body,
        })
    }
}

impl HttpSender for PluginHttp {
    /// Sends one request of the plugin, ending by `deadline` (the call's), and audits it.
    /// Blocking: the request runs on the broker's runtime while this thread waits.
    fn send(
        &self,
        request: wit::Request,
        deadline: Instant,
        audit: Option<&Auditor>,
        user: &str,
    ) -> Result<wit::Response, wit::HttpError> {
        let started = Instant::now();
        let method = request.method.clone();
        let prepared = self.prepare(request);
        let origin = prepared.as_ref().map(|p| p.origin.to_string()).ok();
        let outcome = prepared.and_then(|p| self.exchange(p, deadline));
        if let Some(audit) = audit {
            let status = match &outcome {
                Ok(r) => r.status.to_string(),
                Err(wit::HttpError::Refused(_)) => "refused".into(),
                Err(wit::HttpError::TooLarge(_)) => "too_large".into(),
                Err(wit::HttpError::Timeout) => "timeout".into(),
                Err(wit::HttpError::Failed(_)) => "failed".into(),
            };
            audit.record(Event::new(EventKind::PluginHttp).user(user).reason(format!(
                "{} {} {} {status} {}ms",
                self.plugin,
                method.chars().take(8).collect::<String>().escape_debug(),
                origin.as_deref().unwrap_or("-"),
                started.elapsed().as_millis()
            )));
        }
        outcome.map(|r| self.redact(r))
    }
}

impl PluginHttp {
    fn exchange(&self, p: Prepared, deadline: Instant) -> Result<wit::Response, wit::HttpError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left < Duration::from_millis(1) {
            return Err(wit::HttpError::Timeout);
        }
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| wit::HttpError::Failed("no runtime to send requests on".into()))?;
        let mut builder = self
            .client
            .request(p.method, p.url)
            .headers(p.headers)
            .timeout(left);
        if let Some(body) = p.body {
            builder = builder.body(body);
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        handle.spawn(async move {
            let outcome = tokio::time::timeout(left, async move {
                let res = builder.send().await.map_err(crate::http::ReadError::from)?;
                let status = res.status().as_u16();
                let headers: Vec<(String, String)> = res
                    .headers()
                    .iter()
                    .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                    .collect();
                let body = crate::http::read_capped(res, MAX_RESPONSE).await?;
                Ok::<_, crate::http::ReadError>(wit::Response {
                    status,
                    headers,
                    body,
                })
            })
            .await;
            let _ = tx.send(outcome);
        });
        // The task ends by its own timeout; this wait never outlives the deadline by much.
        match rx.recv_timeout(left + Duration::from_millis(20)) {
            Ok(Ok(Ok(response))) => Ok(response),
            Ok(Ok(Err(crate::http::ReadError::TooLarge(n)))) => Err(wit::HttpError::TooLarge(
                format!("responses are at most {n} bytes"),
            )),
            Ok(Ok(Err(crate::http::ReadError::Transport(e)))) => Err(transport(&e)),
            Ok(Err(_)) | Err(_) => Err(wit::HttpError::Timeout),
        }
    }

    /// Every secret of the plugin, as sent and as form-encoded, replaced in the response.
    fn redact(&self, mut r: wit::Response) -> wit::Response {
        let mut needles: Vec<String> = Vec::new();
        for s in &self.grant.secrets {
            let v = s.value.expose();
            needles.push(v.to_owned());
            let encoded: String = url::form_urlencoded::byte_serialize(v.as_bytes()).collect();
            if encoded != v {
                needles.push(encoded);
            }
        }
        for needle in &needles {
            r.body = replace_bytes(&r.body, needle.as_bytes(), REDACTED.as_bytes());
            for (_, value) in &mut r.headers {
                if value.contains(needle.as_str()) {
                    *value = value.replace(needle.as_str(), REDACTED);
                }
            }
        }
        r
    }
}

/// A transport error for the plugin: a refused address is the host's policy.
fn transport(e: &reqwest::Error) -> wit::HttpError {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(a) = s.downcast_ref::<AddressRefused>() {
            return refused(a.to_string());
        }
        source = s.source();
    }
    if e.is_timeout() {
        return wit::HttpError::Timeout;
    }
    wit::HttpError::Failed(super::host::one_log_line(&crate::http::describe(e), 300))
}

/// `haystack` with every `needle` replaced by `with`.
fn replace_bytes(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return haystack.to_vec();
    }
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_or_listed_addresses_are_allowed() {
        let listed: BTreeSet<IpAddr> = ["127.0.0.1".parse().unwrap()].into();
        for ip in [
            "127.0.0.2",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(!allowed(ip.parse().unwrap(), &listed), "{ip}");
        }
        for ip in [
            "127.0.0.1",
            "::ffff:127.0.0.1",
            "93.184.216.34",
            "2606:2800:220:1::1",
        ] {
            assert!(allowed(ip.parse().unwrap(), &listed), "{ip}");
        }
    }

    fn origin(s: &str) -> Origin {
        Origin::parse(s).unwrap()
    }

    fn http() -> PluginHttp {
        let pi = origin("https://pi.example");
        let grant = HttpGrant {
            origins: [pi.clone(), origin("https://other.example")].into(),
            secrets: vec![
                PluginSecret {
                    name: "token".into(),
                    value: crate::domain::SecretString::new("t0ken/value+1".into()),
                    origins: [pi.clone()].into(),
                    slot: SecretSlot::Header("authorization".into()),
                },
                PluginSecret {
                    name: "pass".into(),
                    value: crate::domain::SecretString::new("p&ss w0rd".into()),
                    origins: [pi].into(),
                    slot: SecretSlot::Field("pass".into()),
                },
            ],
        };
        PluginHttp::new("p", grant, &TrustAnchors::default()).unwrap()
    }

    fn request(url: &str, headers: Vec<(&str, wit::SecretRef)>, body: wit::Body) -> wit::Request {
        wit::Request {
            method: "POST".into(),
            url: url.into(),
            headers: headers
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            body,
        }
    }

    fn secret(name: &str) -> wit::SecretRef {
        wit::SecretRef::Secret(name.into())
    }

    #[test]
    fn secrets_are_written_only_where_they_are_bound() {
        let h = http();
        let p = h
            .prepare(request(
                "https://pi.example/validate/check",
                vec![("Authorization", secret("token"))],
                wit::Body::Form(vec![
                    ("user".into(), wit::SecretRef::Literal("alice".into())),
                    ("pass".into(), secret("pass")),
                ]),
            ))
            .unwrap();
        let auth = &p.headers["authorization"];
        assert_eq!(auth.to_str().unwrap(), "t0ken/value+1");
        assert!(auth.is_sensitive());
        assert_eq!(p.body.unwrap(), b"user=alice&pass=p%26ss+w0rd");
        let refused = |r: Result<Prepared, wit::HttpError>| match r {
            Err(wit::HttpError::Refused(why)) => why,
            Err(e) => panic!("{e:?}"),
            Ok(_) => panic!("not refused"),
        };
        for (req, why) in [
            (
                request("https://evil.example/", vec![], wit::Body::None),
                "not listed",
            ),
            (
                request("http://pi.example/", vec![], wit::Body::None),
                "not listed",
            ),
            (
                request("https://pi.example:8443/", vec![], wit::Body::None),
                "not listed",
            ),
            (
                request("https://u:p@pi.example/", vec![], wit::Body::None),
                "user info",
            ),
            (
                request(
                    "https://other.example/",
                    vec![("authorization", secret("token"))],
                    wit::Body::None,
                ),
                "not bound",
            ),
            (
                request(
                    "https://pi.example/",
                    vec![("x-token", secret("token"))],
                    wit::Body::None,
                ),
                "not bound",
            ),
            (
                request(
                    "https://pi.example/",
                    vec![],
                    wit::Body::Form(vec![("password".into(), secret("pass"))]),
                ),
                "not bound",
            ),
            (
                request(
                    "https://pi.example/",
                    vec![("authorization", secret("pass"))],
                    wit::Body::None,
                ),
                "not bound",
            ),
            (
                request(
                    "https://pi.example/",
                    vec![("Host", wit::SecretRef::Literal("x".into()))],
                    wit::Body::None,
                ),
                "set by the host",
            ),
        ] {
            let got = refused(h.prepare(req));
            assert!(got.contains(why), "{why}: {got}");
        }
        let mut trace = request("https://pi.example/", vec![], wit::Body::None);
        trace.method = "TRACE".into();
        assert!(refused(h.prepare(trace)).contains("method"));
        let big = request(
            "https://pi.example/",
            vec![],
            wit::Body::Raw(vec![0; MAX_REQUEST]),
        );
        assert!(matches!(h.prepare(big), Err(wit::HttpError::TooLarge(_))));
    }

    #[test]
    fn responses_lose_every_secret() {
        let r = http().redact(wit::Response {
            status: 200,
            headers: vec![("x-echo".into(), "Bearer t0ken/value+1".into())],
            body: b"auth=t0ken/value+1 form=pass=p%26ss+w0rd raw=p&ss w0rd".to_vec(),
        });
        assert_eq!(r.headers[0].1, "Bearer [redacted]");
        assert_eq!(
            String::from_utf8(r.body).unwrap(),
            "auth=[redacted] form=pass=[redacted] raw=[redacted]"
        );
    }

    #[test]
    fn secrets_are_replaced_in_bytes() {
        assert_eq!(
            replace_bytes(b"a s3cr3t and s3cr3t", b"s3cr3t", b"[redacted]"),
            b"a [redacted] and [redacted]"
        );
        assert_eq!(replace_bytes(b"ab", b"abc", b"x"), b"ab");
    }
}
