//! Owns the Prometheus metrics of the HTTP layer: request counts and latency by route and status.

use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    /// Answers given because the database was unavailable.
    db_unavailable: IntCounter,
    /// The last database outage (the store's count) that was audited.
    audited_outage: AtomicU64,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "concierge_http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "concierge_http_request_duration_seconds",
                "HTTP request latency by route and status",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["route", "method", "status"],
        )?;
        let db_unavailable = IntCounter::new(
            "concierge_database_unavailable_total",
            "Requests answered 503 because the database was unavailable",
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(db_unavailable.clone()))?;
        Ok(Self {
            registry,
            requests,
            latency,
            db_unavailable,
            audited_outage: AtomicU64::new(0),
        })
    }

    /// Counts one answer given because the database was unavailable; true if `outage` (the
    /// store's outage count) had not been reported yet, so the caller audits each outage once.
    pub fn database_unavailable(&self, outage: u64) -> bool {
        self.db_unavailable.inc();
        let seen = self.audited_outage.load(Ordering::Acquire);
        outage > seen
            && self
                .audited_outage
                .compare_exchange(seen, outage, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    /// The registry served at `/metrics`, for collectors owned elsewhere (audit counters).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn observe(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let status = status.to_string();
        let labels = [route, method, status.as_str()];
        self.requests.with_label_values(&labels).inc();
        self.latency
            .with_label_values(&labels)
            .observe(elapsed.as_secs_f64());
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::Metrics;

    #[test]
    fn each_outage_is_reported_once_and_every_answer_counted() {
        let m = Metrics::new().unwrap();
        assert!(m.database_unavailable(1), "the first answer of outage 1");
        assert!(!m.database_unavailable(1));
        assert!(!m.database_unavailable(1));
        assert!(m.database_unavailable(2), "a new outage");
        assert!(!m.database_unavailable(2));
        assert!(
            m.render()
                .contains("concierge_database_unavailable_total 5")
        );
    }
}
