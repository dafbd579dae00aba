//! The API's Prometheus metrics, at the API's `/metrics`:
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `sparkwing_api_requests_total` | counter | `method`, `route`, `code` |
//! | `sparkwing_api_uploads_total` | counter | |
//! | `sparkwing_api_blobs_written_total` | counter | |
//! | `sparkwing_api_blob_bytes_total` | counter | |
//! | `sparkwing_api_log_lines_total` | counter | |
//! | `sparkwing_api_log_follow_retries_total` | counter | |
//! | `sparkwing_api_log_feed_events_total` | counter | |
//! | `sparkwing_api_log_follow_store_reads_total` | counter | |
//! | `sparkwing_api_runs_triggered_total` | counter | |
//! | `sparkwing_api_gc_blobs_deleted_total` | counter | |
//! | `sparkwing_api_gc_bytes_freed_total` | counter | |
//! | `sparkwing_api_gc_uploads_deleted_total` | counter | |
//! | `sparkwing_api_gc_runs_deleted_total` | counter | |
//! | `sparkwing_api_gc_collections_total` | counter | `outcome` (`ok`, `error`) |
//! | `sparkwing_api_gc_last_success_timestamp_seconds` | gauge | |
//! | `sparkwing_api_gc_last_duration_seconds` | gauge | |
//! | `sparkwing_api_webhook_deliveries_total` | counter | |
//! | `sparkwing_api_webhook_runs_created_total` | counter | |
//! | `sparkwing_api_webhook_ignored_total` | counter | |
//! | `sparkwing_api_webhook_redeliveries_total` | counter | |
//! | `sparkwing_api_webhook_rejected_total` | counter | |

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::{prometheus_text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: String,
    code: u16,
}

/// Every value of the `method` label ([`method_label`]).
const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "other",
];

pub struct ApiMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    pub uploads: Counter,
    pub blobs_written: Counter,
    pub blob_bytes: Counter,
    pub log_lines: Counter,
    pub log_follow_retries: Counter,
    pub log_feed_events: Counter,
    pub log_follow_store_reads: Counter,
    pub runs_triggered: Counter,
    pub gc_blobs_deleted: Counter,
    pub gc_bytes_freed: Counter,
    pub gc_uploads_deleted: Counter,
    pub gc_runs_deleted: Counter,
    gc_collections: Family<OutcomeLabels, Counter>,
    gc_last_success: Gauge<f64, AtomicU64>,
    gc_last_duration: Gauge<f64, AtomicU64>,
    pub webhook_deliveries: Counter,
    pub webhook_runs_created: Counter,
    pub webhook_ignored: Counter,
    pub webhook_redeliveries: Counter,
    pub webhook_rejected: Counter,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        let mut m = ApiMetrics {
            registry: Registry::default(),
            requests: Family::default(),
            uploads: Counter::default(),
            blobs_written: Counter::default(),
            blob_bytes: Counter::default(),
            log_lines: Counter::default(),
            log_follow_retries: Counter::default(),
            log_feed_events: Counter::default(),
            log_follow_store_reads: Counter::default(),
            runs_triggered: Counter::default(),
            gc_blobs_deleted: Counter::default(),
            gc_bytes_freed: Counter::default(),
            gc_uploads_deleted: Counter::default(),
            gc_runs_deleted: Counter::default(),
            gc_collections: Family::default(),
            gc_last_success: Gauge::default(),
            gc_last_duration: Gauge::default(),
            webhook_deliveries: Counter::default(),
            webhook_runs_created: Counter::default(),
            webhook_ignored: Counter::default(),
            webhook_redeliveries: Counter::default(),
            webhook_rejected: Counter::default(),
        };
        // Named without `_total` and helped without the final period: the encoder adds both.
        let r = &mut m.registry;
        r.register(
            "sparkwing_api_requests",
            "API requests, by method, route and status code",
            m.requests.clone(),
        );
        r.register(
            "sparkwing_api_gc_collections",
            "Garbage collections (retention, uploads, blobs), by outcome",
            m.gc_collections.clone(),
        );
        r.register(
            "sparkwing_api_gc_last_success_timestamp_seconds",
            "When this replica's last garbage collection succeeded, Unix seconds (0: none yet)",
            m.gc_last_success.clone(),
        );
        r.register(
            "sparkwing_api_gc_last_duration_seconds",
            "How long this replica's last garbage collection took",
            m.gc_last_duration.clone(),
        );
        for (name, help, counter) in [
            ("sparkwing_api_uploads", "Upload manifests accepted", &m.uploads),
            (
                "sparkwing_api_blobs_written",
                "Blobs stored (not counting ones already present)",
                &m.blobs_written,
            ),
            (
                "sparkwing_api_blob_bytes",
                "Bytes of blobs stored, uncompressed",
                &m.blob_bytes,
            ),
            (
                "sparkwing_api_log_lines",
                "Log lines stored (not counting duplicates)",
                &m.log_lines,
            ),
            (
                "sparkwing_api_log_follow_retries",
                "Reads of a followed log that failed on a store outage and are tried again",
                &m.log_follow_retries,
            ),
            (
                "sparkwing_api_log_feed_events",
                "Log feed events received from the metadata store (lines ingested on any replica)",
                &m.log_feed_events,
            ),
            (
                "sparkwing_api_log_follow_store_reads",
                "Reads of the content store by log followers (the API's and the dashboard's) for lines the replica's recent lines did not hold",
                &m.log_follow_store_reads,
            ),
            (
                "sparkwing_api_runs_triggered",
                "PipelineRuns created through the API",
                &m.runs_triggered,
            ),
            (
                "sparkwing_api_gc_blobs_deleted",
                "Blobs deleted by garbage collection",
                &m.gc_blobs_deleted,
            ),
            (
                "sparkwing_api_gc_bytes_freed",
                "Bytes of blobs deleted by garbage collection",
                &m.gc_bytes_freed,
            ),
            (
                "sparkwing_api_gc_uploads_deleted",
                "Upload manifests deleted by garbage collection",
                &m.gc_uploads_deleted,
            ),
            (
                "sparkwing_api_gc_runs_deleted",
                "Finished runs removed by retention (with their logs, job states, tokens and archives)",
                &m.gc_runs_deleted,
            ),
            (
                "sparkwing_api_webhook_deliveries",
                "Webhook deliveries with a valid signature",
                &m.webhook_deliveries,
            ),
            (
                "sparkwing_api_webhook_runs_created",
                "PipelineRuns created by webhook deliveries",
                &m.webhook_runs_created,
            ),
            (
                "sparkwing_api_webhook_ignored",
                "Webhook deliveries that started nothing (tags, deletions, other events, no matching Pipeline)",
                &m.webhook_ignored,
            ),
            (
                "sparkwing_api_webhook_redeliveries",
                "Webhook deliveries seen before (answered with the runs they created)",
                &m.webhook_redeliveries,
            ),
            (
                "sparkwing_api_webhook_rejected",
                "Webhook deliveries refused (no secret configured, bad signature, malformed payload, errors)",
                &m.webhook_rejected,
            ),
        ] {
            r.register(name, help, counter.clone());
        }
        m
    }
}

impl ApiMetrics {
    pub fn add(counter: &Counter, n: u64) {
        counter.inc_by(n);
    }

    /// Count a garbage collection: its report's figures when it succeeded, its outcome, and how
    /// long it took.
    pub fn collected(
        &self,
        report: Option<&sparkwing_api::wire::GcReport>,
        took: std::time::Duration,
    ) {
        let outcome = if let Some(r) = report {
            self.gc_blobs_deleted.inc_by(r.blobs_deleted);
            self.gc_bytes_freed.inc_by(r.bytes_freed);
            self.gc_uploads_deleted.inc_by(r.uploads_deleted);
            self.gc_runs_deleted.inc_by(r.runs_deleted);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            self.gc_last_success.set(now);
            "ok"
        } else {
            "error"
        };
        self.gc_collections
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        self.gc_last_duration.set(took.as_secs_f64());
    }

    /// Garbage collections counted with `outcome` (tests).
    pub fn collections(&self, outcome: &'static str) -> u64 {
        self.gc_collections
            .get(&OutcomeLabels { outcome })
            .map_or(0, |c| c.get())
    }

    fn request(&self, method: &'static str, route: &str, code: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                method,
                route: route.to_string(),
                code,
            })
            .inc();
    }

    /// Requests counted for `route` answered with `code` (tests).
    pub fn requests(&self, route: &str, code: u16) -> u64 {
        METHODS
            .iter()
            .filter_map(|method| {
                self.requests
                    .get(&RequestLabels {
                        method,
                        route: route.to_string(),
                        code,
                    })
                    .map(|c| c.get())
            })
            .sum()
    }

    /// Distinct `sparkwing_api_requests_total` series (tests; read from the exposition, as
    /// `prometheus-client` counts a family's series only in its own tests).
    pub fn request_series(&self) -> usize {
        self.render()
            .lines()
            .filter(|l| l.starts_with("sparkwing_api_requests_total{"))
            .count()
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; the encoder only passes the writer's errors on.
        let _ = prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

/// The `method` label: one of the standard methods, else `other`. A client may send any token as
/// a method (a 405 answers it), and each distinct one would otherwise be a new series kept forever.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// Middleware counting requests by method (standard ones; `other`), route template (`unmatched`
/// when no route matched) and status code: label values come from fixed sets, never from the
/// request's text.
pub async fn track(State(m): State<Arc<ApiMetrics>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = method_label(req.method());
    let res = next.run(req).await;
    m.request(method, &route, res.status().as_u16());
    res
}
