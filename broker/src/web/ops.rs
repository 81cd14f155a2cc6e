//! Owns the operational endpoints: liveness, readiness, Prometheus metrics and static assets.

use actix_web::http::header;
use actix_web::{HttpResponse, web};

use super::AppState;
use crate::error::WebError;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// Ready when the database answers within `[database] ready_timeout`; otherwise 503 "not
/// ready" at that deadline, whatever the pool or the network is doing (the probe's own bound,
/// well under a load balancer's probe timeout).
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let store = state.store.clone();
    let wait = state.settings.ready_timeout;
    // The checkout waits `wait`; the outer bound also covers a blocking pool that is busy.
    let answer = tokio::time::timeout(
        wait + std::time::Duration::from_millis(100),
        web::block(move || store.ping_within(wait)),
    )
    .await;
    let backend = state.store.backend();
    match answer {
        Ok(Ok(Ok(()))) => {
            HttpResponse::Ok().json(serde_json::json!({"status": "ready", "database": backend}))
        }
        other => {
            let why = match other {
                Ok(Ok(Err(e))) => e.to_string(),
                Ok(Err(e)) => e.to_string(),
                _ => format!("no answer within {wait:?}"),
            };
            tracing::warn!(error = %why, "readiness check failed");
            let mut res = HttpResponse::ServiceUnavailable();
            res.insert_header((header::RETRY_AFTER, "1"));
            res.insert_header((header::CACHE_CONTROL, "no-store"));
            let mut res = res.json(serde_json::json!({
                "status": "unavailable",
                "database": backend,
            }));
            res.extensions_mut()
                .insert(crate::error::DatabaseUnavailable);
            res
        }
    }
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}

pub async fn asset(
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, WebError> {
    let asset = state.pages.asset(&name).ok_or(WebError::NotFound)?;
    Ok(HttpResponse::Ok()
        .content_type(asset.content_type)
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(asset.body.clone()))
}
