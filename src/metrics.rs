//! Prometheus metrics, all prefixed `portcullis_`.
//!
//! Owns the series and their names; other modules record through the typed
//! methods here and never build series names themselves. Encoding is done by
//! the `prometheus-client` crate. No label ever carries a secret or an
//! unbounded client-supplied value (routes, statuses and upstream names only).

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServedLabels {
    cache: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    rule: String,
    outcome: &'static str,
    /// The requirement that failed: "signature", an attestation's name, or "-".
    requirement: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttestationLabels {
    rule: String,
    attestation: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotaryLabels {
    server: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct S3Labels {
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TierLabels {
    tier: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamStatusLabels {
    upstream: String,
    status: u16,
}

struct Inner {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<RouteLabels, Histogram>,
    served_bytes: Family<ServedLabels, Counter>,
    cache: Family<ResultLabels, Counter>,
    upstream_requests: Family<UpstreamStatusLabels, Counter>,
    upstream_bytes: Family<UpstreamLabels, Counter>,
    upstream_errors: Family<UpstreamLabels, Counter>,
    fills_in_flight: Gauge,
    cache_size: Gauge,
    cache_objects: Gauge,
    evictions: Counter,
    evicted_bytes: Counter,
    decisions: Family<DecisionLabels, Counter>,
    attestations: Family<AttestationLabels, Counter>,
    notary: Family<NotaryLabels, Counter>,
    auth_failures: Family<AuthLabels, Counter>,
    corrupt_objects: Counter,
    scrubbed_bytes: Counter,
    index_writable: Gauge,
    connections: Gauge,
    connections_refused: Counter,
    fills_waiting: Gauge,
    fills_refused: Counter,
    s3_requests: Family<S3Labels, Counter>,
    s3_bytes: Family<S3Labels, Counter>,
    s3_errors: Family<S3Labels, Counter>,
    store_reads: Family<TierLabels, Counter>,
    verifications: Family<KindLabels, Counter>,
}

/// Handle to the process's metrics; cheap to clone.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

/// How a request was served from the cache's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheResult {
    /// Served from the cache without asking upstream.
    Hit,
    /// Fetched from upstream by this request.
    Miss,
    /// Joined another request's upstream fetch.
    Coalesced,
    /// Served from the cache because upstream failed.
    Stale,
    /// Tag confirmed unchanged upstream, served from the cache.
    Revalidated,
    /// Passed through from upstream without caching (tag lists).
    Pass,
}

impl CacheResult {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheResult::Hit => "hit",
            CacheResult::Miss => "miss",
            CacheResult::Coalesced => "coalesced",
            CacheResult::Stale => "stale",
            CacheResult::Revalidated => "revalidated",
            CacheResult::Pass => "pass",
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("portcullis");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by route and status",
            requests.clone(),
        );
        // 0.25 ms .. ~8 s: manifest hits sit at the low end, blob bodies
        // at the high end.
        let durations = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
        });
        registry.register(
            "request_duration_seconds",
            "Time from request to the end of the response body, by route",
            durations.clone(),
        );
        let served_bytes = Family::<ServedLabels, Counter>::default();
        registry.register(
            "served_bytes",
            "Body bytes sent to clients, by cache result (\"-\" for routes outside the cache)",
            served_bytes.clone(),
        );
        let cache = Family::<ResultLabels, Counter>::default();
        registry.register(
            "cache_requests",
            "Manifest and blob requests by cache result (hit, miss, coalesced, stale, revalidated)",
            cache.clone(),
        );
        let upstream_requests = Family::<UpstreamStatusLabels, Counter>::default();
        registry.register(
            "upstream_requests",
            "Requests sent to upstreams, by upstream and final status",
            upstream_requests.clone(),
        );
        let upstream_bytes = Family::<UpstreamLabels, Counter>::default();
        registry.register(
            "upstream_bytes",
            "Blob bytes received from upstreams",
            upstream_bytes.clone(),
        );
        let upstream_errors = Family::<UpstreamLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Upstream requests that failed without a response (connect, timeout, auth)",
            upstream_errors.clone(),
        );
        let fills_in_flight = Gauge::default();
        registry.register(
            "fills_in_flight",
            "Blob downloads from upstream in progress",
            fills_in_flight.clone(),
        );
        let cache_size = Gauge::default();
        registry.register(
            "cache_size_bytes",
            "Bytes held in the cache",
            cache_size.clone(),
        );
        let cache_objects = Gauge::default();
        registry.register(
            "cache_objects",
            "Objects held in the cache",
            cache_objects.clone(),
        );
        let evictions = Counter::default();
        registry.register(
            "cache_evictions",
            "Objects evicted to stay under cache.max_size",
            evictions.clone(),
        );
        let evicted_bytes = Counter::default();
        registry.register(
            "cache_evicted_bytes",
            "Bytes evicted to stay under cache.max_size",
            evicted_bytes.clone(),
        );
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "policy_decisions",
            "Policy gate decisions by rule (\"-\" for the default), outcome and the requirement that failed (\"signature\", an attestation's name, or \"-\")",
            decisions.clone(),
        );
        let attestations = Family::<AttestationLabels, Counter>::default();
        registry.register(
            "attestations_checked",
            "Attestation requirements checked (not answered from the verdict cache), by rule, attestation and outcome (passed or failed)",
            attestations.clone(),
        );
        let notary = Family::<NotaryLabels, Counter>::default();
        registry.register(
            "notary_trust_data",
            "Docker Content Trust lookups by Notary server and outcome: fetched (verified from the server), reused (taken from a fetch that began while the lookup waited for it), kept (the server unreachable or offline: kept trust data decided), refused (none usable)",
            notary.clone(),
        );
        let auth_failures = Family::<AuthLabels, Counter>::default();
        registry.register(
            "auth_failures",
            "Requests refused by [auth], by reason: unknown_user, bad_password, bad_token, expired_token, bad_header, scope (a token without this repository), forbidden (signed in, not allowed this image), rate_limited (too many failed logins from the address), busy (too many logins waiting for a password check)",
            auth_failures.clone(),
        );
        let corrupt_objects = Counter::default();
        registry.register(
            "cache_corrupt_objects",
            "Cached objects found not to match their digest (on read, by the scrub or fsck) and removed",
            corrupt_objects.clone(),
        );
        let scrubbed_bytes = Counter::default();
        registry.register(
            "cache_scrubbed_bytes",
            "Bytes of cached objects re-hashed by the background scrub",
            scrubbed_bytes.clone(),
        );
        let index_writable = Gauge::default();
        registry.register(
            "index_writable",
            "1 while the cache index accepts writes, 0 while it fails (readyz is 503 then)",
            index_writable.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "connections",
            "Client connections open on the main listener",
            connections.clone(),
        );
        let connections_refused = Counter::default();
        registry.register(
            "connections_refused",
            "Client connections closed at accept because max_connections was reached",
            connections_refused.clone(),
        );
        let fills_waiting = Gauge::default();
        registry.register(
            "fills_waiting",
            "Blob downloads waiting for a slot (cache.max_fills)",
            fills_waiting.clone(),
        );
        let fills_refused = Counter::default();
        registry.register(
            "fills_refused",
            "Blob requests answered 503 because every fill slot and queue place was taken",
            fills_refused.clone(),
        );
        let s3_requests = Family::<S3Labels, Counter>::default();
        registry.register(
            "s3_requests",
            "Requests to the shared S3 bucket, by operation (retries included)",
            s3_requests.clone(),
        );
        let s3_bytes = Family::<S3Labels, Counter>::default();
        registry.register(
            "s3_bytes",
            "Body bytes sent to or received from the S3 bucket, by operation",
            s3_bytes.clone(),
        );
        let s3_errors = Family::<S3Labels, Counter>::default();
        registry.register(
            "s3_errors",
            "Failed S3 requests (connection, timeout, unexpected status), by operation",
            s3_errors.clone(),
        );
        let store_reads = Family::<TierLabels, Counter>::default();
        registry.register(
            "store_reads",
            "Stored objects opened for reading, by where they were found: tier=\"local\" (this replica's disk) or \"bucket\" (the shared bucket)",
            store_reads.clone(),
        );
        let verifications = Family::<KindLabels, Counter>::default();
        registry.register(
            "gate_verifications",
            "Evidence checks the gate ran, by kind (image or artifact): not answered from the verdict cache or another request's check under way",
            verifications.clone(),
        );
        Metrics(Arc::new(Inner {
            registry,
            requests,
            durations,
            served_bytes,
            cache,
            upstream_requests,
            upstream_bytes,
            upstream_errors,
            fills_in_flight,
            cache_size,
            cache_objects,
            evictions,
            evicted_bytes,
            decisions,
            attestations,
            notary,
            auth_failures,
            corrupt_objects,
            scrubbed_bytes,
            index_writable,
            connections,
            connections_refused,
            fills_waiting,
            fills_refused,
            s3_requests,
            s3_bytes,
            s3_errors,
            store_reads,
            verifications,
        }))
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.0.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// One answered request: its route, status, cache result (if it went
    /// through the cache), body bytes sent and time to the body's end.
    pub fn request(
        &self,
        route: &'static str,
        status: StatusCode,
        cache: Option<CacheResult>,
        bytes: u64,
        elapsed: Duration,
    ) {
        self.0
            .requests
            .get_or_create(&RequestLabels {
                route,
                status: status.as_u16(),
            })
            .inc();
        self.0
            .durations
            .get_or_create(&RouteLabels { route })
            .observe(elapsed.as_secs_f64());
        self.0
            .served_bytes
            .get_or_create(&ServedLabels {
                cache: cache.map_or("-", CacheResult::as_str),
            })
            .inc_by(bytes);
        if let Some(c) = cache {
            self.cache_result(c);
        }
    }

    fn cache_result(&self, result: CacheResult) {
        self.0
            .cache
            .get_or_create(&ResultLabels {
                result: result.as_str(),
            })
            .inc();
    }

    pub fn upstream_response(&self, upstream: &str, status: StatusCode) {
        self.0
            .upstream_requests
            .get_or_create(&UpstreamStatusLabels {
                upstream: upstream.to_owned(),
                status: status.as_u16(),
            })
            .inc();
    }

    pub fn upstream_error(&self, upstream: &str) {
        self.0
            .upstream_errors
            .get_or_create(&UpstreamLabels {
                upstream: upstream.to_owned(),
            })
            .inc();
    }

    pub fn upstream_bytes(&self, upstream: &str, bytes: u64) {
        self.0
            .upstream_bytes
            .get_or_create(&UpstreamLabels {
                upstream: upstream.to_owned(),
            })
            .inc_by(bytes);
    }

    /// Count a fill as in flight until the guard drops.
    pub fn fill_started(&self) -> FillGauge {
        self.0.fills_in_flight.inc();
        FillGauge(self.clone())
    }

    pub fn cache_totals(&self, bytes: u64, objects: usize) {
        self.0
            .cache_size
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.0
            .cache_objects
            .set(i64::try_from(objects).unwrap_or(i64::MAX));
    }

    pub fn policy_decision(&self, rule: &str, outcome: &'static str, requirement: &str) {
        self.0
            .decisions
            .get_or_create(&DecisionLabels {
                rule: rule.to_owned(),
                outcome,
                requirement: requirement.to_owned(),
            })
            .inc();
    }

    /// One S3 request (see `s3_requests`), its body bytes either way, and
    /// whether it failed.
    pub fn s3_request(&self, op: &'static str, bytes: u64, failed: bool) {
        let labels = S3Labels { op };
        self.0.s3_requests.get_or_create(&labels).inc();
        if bytes > 0 {
            self.0.s3_bytes.get_or_create(&labels).inc_by(bytes);
        }
        if failed {
            self.0.s3_errors.get_or_create(&labels).inc();
        }
    }

    /// A stored object opened for reading from this replica's disk
    /// (`local`) or the shared bucket (`bucket`).
    pub fn store_read(&self, tier: &'static str) {
        self.0.store_reads.get_or_create(&TierLabels { tier }).inc();
    }

    /// The gate checked evidence afresh (see `gate_verifications`).
    pub fn verification_run(&self, kind: &'static str) {
        self.0
            .verifications
            .get_or_create(&KindLabels { kind })
            .inc();
    }

    /// A request refused by `[auth]` (see `auth_failures`).
    pub fn auth_failure(&self, reason: &'static str) {
        self.0
            .auth_failures
            .get_or_create(&AuthLabels { reason })
            .inc();
    }

    /// A Docker Content Trust lookup (see `notary_trust_data`).
    pub fn notary_trust_data(&self, server: &str, outcome: &'static str) {
        self.0
            .notary
            .get_or_create(&NotaryLabels {
                server: server.to_owned(),
                outcome,
            })
            .inc();
    }

    pub fn attestation_checked(&self, rule: &str, attestation: &str, passed: bool) {
        self.0
            .attestations
            .get_or_create(&AttestationLabels {
                rule: rule.to_owned(),
                attestation: attestation.to_owned(),
                outcome: if passed { "passed" } else { "failed" },
            })
            .inc();
    }

    pub fn evicted(&self, objects: u64, bytes: u64) {
        self.0.evictions.inc_by(objects);
        self.0.evicted_bytes.inc_by(bytes);
    }

    pub fn corrupt_objects(&self, n: u64) {
        self.0.corrupt_objects.inc_by(n);
    }

    pub fn scrubbed(&self, bytes: u64) {
        self.0.scrubbed_bytes.inc_by(bytes);
    }

    pub fn index_writable(&self, writable: bool) {
        self.0.index_writable.set(i64::from(writable));
    }

    /// A connection opened; the guard counts it until dropped.
    pub fn connection(&self) -> ConnectionGauge {
        self.0.connections.inc();
        ConnectionGauge(self.clone())
    }

    pub fn connection_refused(&self) {
        self.0.connections_refused.inc();
    }

    pub fn fills_waiting(&self, delta: i64) {
        self.0.fills_waiting.inc_by(delta);
    }

    pub fn fill_refused(&self) {
        self.0.fills_refused.inc();
    }
}

/// Decrements `portcullis_fills_in_flight` on drop.
/// Counts an open connection until dropped.
pub struct ConnectionGauge(Metrics);

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        self.0.0.connections.dec();
    }
}

pub struct FillGauge(Metrics);

impl Drop for FillGauge {
    fn drop(&mut self) {
        self.0.0.fills_in_flight.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_prefixed_series() {
        let m = Metrics::new();
        m.request(
            "blob",
            StatusCode::OK,
            Some(CacheResult::Coalesced),
            10,
            Duration::from_millis(3),
        );
        m.request("base", StatusCode::OK, None, 2, Duration::from_micros(100));
        m.upstream_response("docker.io", StatusCode::OK);
        let g = m.fill_started();
        let text = m.encode();
        assert!(
            text.contains("portcullis_requests_total{route=\"blob\",status=\"200\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("portcullis_served_bytes_total{cache=\"coalesced\"} 10"),
            "{text}"
        );
        assert!(
            text.contains("portcullis_served_bytes_total{cache=\"-\"} 2"),
            "{text}"
        );
        assert!(
            text.contains(
                "portcullis_request_duration_seconds_bucket{le=\"0.002\",route=\"blob\"} 0"
            ) && text.contains(
                "portcullis_request_duration_seconds_bucket{le=\"0.004\",route=\"blob\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("portcullis_cache_requests_total{result=\"coalesced\"} 1"),
            "{text}"
        );
        assert!(text.contains(
            "portcullis_upstream_requests_total{upstream=\"docker.io\",status=\"200\"} 1"
        ));
        assert!(text.contains("portcullis_fills_in_flight 1"), "{text}");
        drop(g);
        assert!(m.encode().contains("portcullis_fills_in_flight 0"));
    }

    /// The Grafana dashboard shipped in docs/ queries only series that
    /// exist, so it cannot silently drift from the code.
    #[test]
    fn the_dashboard_queries_only_exposed_series() {
        let m = Metrics::new();
        m.request(
            "manifest",
            StatusCode::OK,
            Some(CacheResult::Hit),
            1,
            Duration::ZERO,
        );
        m.upstream_response("u", StatusCode::OK);
        m.upstream_error("u");
        m.upstream_bytes("u", 1);
        m.policy_decision("r", "denied", "sbom");
        m.attestation_checked("r", "sbom", false);
        let exposed = m.encode();
        let dashboard = include_str!("../docs/grafana-dashboard.json");
        let mut names: Vec<&str> = dashboard
            .match_indices("portcullis_")
            .map(|(i, _)| {
                let rest = &dashboard[i..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                    .unwrap_or(rest.len());
                &rest[..end]
            })
            .collect();
        names.sort_unstable();
        names.dedup();
        assert!(names.len() >= 10, "{names:?}");
        for name in names {
            assert!(
                exposed.contains(&format!("{name}{{")) || exposed.contains(&format!("{name} ")),
                "the dashboard queries {name}, which /metrics does not expose"
            );
        }
    }
}
