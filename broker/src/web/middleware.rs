//! Owns what wraps every request: a request id, a tracing span and access log line, Prometheus
//! metrics, security headers, and turning every bare error response into a localised error page
//! (so no framework or internal message ever reaches a browser).

use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpResponse, web};
use tracing::Instrument;

use super::{AppState, RequestInfo};
use crate::domain::Locale;
use crate::error::{DatabaseUnavailable, ErrorMessage};

/// The one Content-Security-Policy of the hosted pages. `form_action` lists the sources a form
/// may lead to (browsers apply `form-action` to the whole redirect chain after a submission);
/// `scripts` allows this site's own script files (never inline ones).
pub fn csp(form_action: &[&str], scripts: bool) -> String {
    let script = if scripts { " script-src 'self';" } else { "" };
    format!(
        "default-src 'none';{script} style-src 'self'; img-src 'self' data:; form-action {}; \
         frame-ancestors 'none'; base-uri 'none'",
        form_action.join(" ")
    )
}

/// The policy of every page that sets no other.
static DEFAULT_CSP: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| csp(&["'self'"], false));

fn negotiate_locale(req: &ServiceRequest, default: Locale) -> Locale {
    let from_query = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "ui_locales")
        .and_then(|(_, v)| Locale::from_ui_locales(&v));
    from_query
        .or_else(|| {
            req.headers()
                .get(header::ACCEPT_LANGUAGE)
                .and_then(|v| v.to_str().ok())
                .and_then(Locale::from_accept_language)
        })
        .unwrap_or(default)
}

/// A request id for logs and support: unique in this process, different across processes. Not
/// a secret, so it needs no system call per request.
fn request_id(entropy: &dyn crate::clock::Entropy) -> String {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static PREFIX: OnceLock<u32> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        let mut b = [0u8; 4];
        entropy.fill(&mut b);
        u32::from_le_bytes(b)
    });
    format!(
        "{prefix:08x}{:08x}",
        COUNTER.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff
    )
}

pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = Instant::now();
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    };
    let info = RequestInfo {
        id: request_id(state.entropy.as_ref()),
        locale: negotiate_locale(&req, state.settings.ui.default_locale),
    };
    req.extensions_mut().insert(info.clone());
    let method = req.method().to_string();
    let span =
        tracing::info_span!("request", request_id = %info.id, method = %method, path = %req.path());

    let (http_req, mut res) = match next.call(req).instrument(span.clone()).await {
        Ok(res) => {
            let (r, res) = res.into_parts();
            (r, res.map_into_boxed_body())
        }
        Err(e) => {
            // Errors raised by inner middleware: we no longer hold the request, so answer plainly.
            let res = e.error_response();
            let mut out = HttpResponse::build(res.status()).finish();
            add_headers(&mut out, &state, &info);
            return Err(actix_web::error::InternalError::from_response(e, out).into());
        }
    };

    if res.status() == StatusCode::INTERNAL_SERVER_ERROR
        && is_bare_error(&res)
        && state.store.outage_ongoing()
    {
        // A failure some layer did not recognise as the database's, while the database is
        // known to be down: the one honest answer is the outage's.
        let mut out = HttpResponse::ServiceUnavailable().finish();
        out.extensions_mut()
            .insert(ErrorMessage("error_db_unavailable_message"));
        out.extensions_mut().insert(DatabaseUnavailable);
        out.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_static(crate::error::UNAVAILABLE_RETRY_AFTER),
        );
        res = out;
    }
    if res.extensions().get::<DatabaseUnavailable>().is_some()
        && state.metrics.database_unavailable(state.store.outages())
    {
        state.provider.audit.record(
            crate::audit::Event::new(crate::audit::EventKind::DatabaseUnavailable)
                .reason("database_unavailable"),
        );
    }
    if is_bare_error(&res) {
        let message = res.extensions().get::<ErrorMessage>().copied();
        let retry_after = res.headers().get(header::RETRY_AFTER).cloned();
        res = error_page(&state, &info, res.status(), message, &http_req);
        if let Some(v) = retry_after {
            res.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    add_headers(&mut res, &state, &info);

    let route = http_req
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let status = res.status().as_u16();
    let elapsed = started.elapsed();
    state.metrics.observe(&route, &method, status, elapsed);
    span.in_scope(|| {
        tracing::info!(status, route = %route, latency_ms = elapsed.as_secs_f64() * 1000.0, "request");
    });
    Ok(ServiceResponse::new(http_req, res))
}

/// An error status whose body we did not render ourselves (HTML page or RFC JSON error).
fn is_bare_error(res: &HttpResponse) -> bool {
    if !(res.status().is_client_error() || res.status().is_server_error()) {
        return false;
    }
    let ct = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    !(ct.starts_with("text/html") || ct.starts_with("application/json"))
}

fn message_keys(status: StatusCode) -> (&'static str, &'static str) {
    match status.as_u16() {
        400 => ("error_400_title", "error_400_message"),
        401 | 403 => ("error_403_title", "error_403_message"),
        404 => ("error_404_title", "error_404_message"),
        405 => ("error_405_title", "error_405_message"),
        413 => ("error_413_title", "error_413_message"),
        429 => ("error_429_title", "error_429_message"),
        503 => ("error_503_title", "error_503_message"),
        s if s < 500 => ("error_400_title", "error_400_message"),
        _ => ("error_500_title", "error_500_message"),
    }
}

fn error_page(
    state: &AppState,
    info: &RequestInfo,
    status: StatusCode,
    message: Option<ErrorMessage>,
    req: &actix_web::HttpRequest,
) -> HttpResponse {
    let (title_key, default_message_key) = message_keys(status);
    let message_key = message.map(|m| m.0).unwrap_or(default_message_key);
    let vm = serde_json::json!({
        "status": status.as_u16(),
        "title": state.pages.text(info.locale, title_key),
        "message": state.pages.text(info.locale, message_key),
        "request_id": info.id,
    });
    let signed_in = req.extensions().get::<super::SignedIn>().is_some();
    match state.pages.render("error", info.locale, signed_in, &vm) {
        Ok(html) => HttpResponse::build(status)
            .content_type("text/html; charset=utf-8")
            .body(html),
        Err(e) => {
            tracing::error!(error = %e, "error page failed to render");
            HttpResponse::build(status)
                .content_type("text/plain; charset=utf-8")
                .body(format!(
                    "{} {}",
                    status.as_u16(),
                    status.canonical_reason().unwrap_or("Error")
                ))
        }
    }
}

fn add_headers(res: &mut HttpResponse, state: &AppState, info: &RequestInfo) {
    let h = res.headers_mut();
    let has_cache_control = h.contains_key(header::CACHE_CONTROL);
    let has_csp = h.contains_key(header::CONTENT_SECURITY_POLICY);
    let mut set = |name: HeaderName, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    };
    if !has_csp {
        set(header::CONTENT_SECURITY_POLICY, &DEFAULT_CSP);
    }
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::X_FRAME_OPTIONS, "DENY");
    set(header::REFERRER_POLICY, "no-referrer");
    set(
        HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    set(HeaderName::from_static("x-request-id"), &info.id);
    if state.settings.https() {
        set(
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=31536000; includeSubDomains",
        );
    }
    if !has_cache_control {
        set(header::CACHE_CONTROL, "no-store");
    }
}
