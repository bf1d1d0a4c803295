//! Prometheus metrics. Counters the request path bumps are resolved per pool when the pool is
//! built (a [`PoolMetrics`] of plain atomic handles), so a request never looks a label up; the
//! gauges (in flight, health, active pool) are read from the snapshot when `/metrics` is scraped.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The Prometheus registry and the counters turnout keeps (per pool, per server, and its own).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    grpc: IntCounterVec,
    duration: HistogramVec,
    retries: IntCounterVec,
    ejections: IntCounterVec,
    pub(crate) switches: IntCounter,
    pub(crate) rollbacks: IntCounter,
    /// The share of new clients a guarded rollout gives its target now (0: none under way).
    pub(crate) rollout_percent: IntGauge,
    /// Rollout steps judged, by verdict ("pass", "fail"), and rollouts ended, by outcome.
    pub(crate) rollout_steps: IntCounterVec,
    pub(crate) rollouts: IntCounterVec,
    in_flight: IntGaugeVec,
    tunnels: IntGaugeVec,
    healthy: IntGaugeVec,
    active: IntGaugeVec,
    weight: IntGaugeVec,
    /// Cache lookups that were served from memory, and those that went upstream.
    pub cache_hits: IntCounter,
    /// Cache lookups that went upstream.
    pub cache_misses: IntCounter,
    cache_bytes: IntGauge,
    cache_entries: IntGauge,
    generation: IntGauge,
    maintenance: IntGauge,
    paused: IntGauge,
    start_time: IntGauge,
    process_generation: IntGauge,
    held: IntGauge,
    held_total: IntGauge,
    shed_total: IntGauge,
    tls_not_after: IntGaugeVec,
    cutoffs: IntCounterVec,
    limited: IntCounterVec,
    connections_limited: IntCounterVec,
    auth: IntCounterVec,
    compressed: IntCounterVec,
    mirror_dropped: IntCounter,
    /// The fleet's gauges, in a registry of their own: rendered only with `[fleet]`.
    fleet: FleetGauges,
}

/// `turnout_fleet_*`: this member's view of its fleet.
#[derive(Debug, Clone)]
struct FleetGauges {
    registry: Registry,
    members: IntGauge,
    applied: IntGauge,
    seen: IntGauge,
    behind: IntGauge,
    connected: IntGauge,
    apply_seconds: prometheus::Gauge,
    fleet_apply_seconds: prometheus::Gauge,
}

impl FleetGauges {
    fn new() -> FleetGauges {
        let r = Registry::new();
        let gauge =
            |name: &str, help: &str| register(&r, IntGauge::new(name, help).expect("valid metric"));
        FleetGauges {
            members: gauge(
                "turnout_fleet_members",
                "Members of this instance's fleet, as it last heard (itself included).",
            ),
            applied: gauge(
                "turnout_fleet_applied_generation",
                "The fleet generation this instance serves.",
            ),
            seen: gauge(
                "turnout_fleet_seen_generation",
                "The newest fleet generation this instance has seen (above applied: it is behind).",
            ),
            behind: gauge(
                "turnout_fleet_health_held",
                "1 while this instance fails its health path for the fleet (joining, or behind).",
            ),
            connected: gauge(
                "turnout_fleet_store_connected",
                "1 while the fleet's store (etcd) answers this instance.",
            ),
            apply_seconds: register(
                &r,
                prometheus::Gauge::new(
                    "turnout_fleet_last_apply_seconds",
                    "The time from the last fleet commit to this instance applying it.",
                )
                .expect("valid metric"),
            ),
            fleet_apply_seconds: register(
                &r,
                prometheus::Gauge::new(
                    "turnout_fleet_commit_to_last_applied_seconds",
                    "The time from the last fleet commit to the last member applying it, as this instance heard the members' reports.",
                )
                .expect("valid metric"),
            ),
            registry: r,
        }
    }

    fn set(&self, f: &crate::fleet::FleetStatus) {
        if let Some(ms) = f.fleet_apply_ms {
            self.fleet_apply_seconds.set(ms as f64 / 1000.0);
        }
        self.members.set(f.members.len() as i64);
        self.applied.set(f.applied as i64);
        self.seen.set(f.seen as i64);
        self.behind.set(i64::from(f.hold.is_some()));
        self.connected.set(i64::from(f.connected));
        self.apply_seconds.set(f.last_apply_ms as f64 / 1000.0);
    }
}

/// The label values of the status classes, by `status / 100`.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// One pool's counters, resolved once.
#[derive(Debug, Clone)]
pub struct PoolMetrics {
    requests: [IntCounter; 5],
    duration: Histogram,
    retries: IntCounter,
    /// `turnout_grpc_calls_total`, and this pool's name for its label: a series is made only
    /// for the codes a pool's calls end with (a pool that serves no gRPC has none).
    grpc: (IntCounterVec, std::sync::Arc<str>),
}

impl PoolMetrics {
    /// Counts one finished request: its status and how long until its response head.
    #[inline]
    pub fn observe(&self, status: u16, seconds: f64) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests[class].inc();
        self.duration.observe(seconds);
    }

    /// Counts a gRPC call the app ended with `code` (its `grpc-status`, 0 to 16).
    pub fn grpc_call(&self, code: u16) {
        let name = turnout_config::GRPC_CODE_NAMES
            .get(usize::from(code))
            .copied()
            .unwrap_or("UNKNOWN");
        self.grpc.0.with_label_values(&[&*self.grpc.1, name]).inc();
    }

    /// A request was sent again to another server.
    pub fn retried(&self) {
        self.retries.inc();
    }

    /// The pool's counters now, since start-up: two samples make a window (the rollout's
    /// judgement). Read off the request path; it allocates.
    pub fn sample(&self) -> crate::rollout::Sample {
        use prometheus::core::Collector;
        let buckets = self
            .duration
            .collect()
            .first()
            .and_then(|family| family.get_metric().first())
            .map(|m| {
                m.get_histogram()
                    .get_bucket()
                    .iter()
                    .map(|b| (b.upper_bound(), b.cumulative_count()))
                    .collect()
            })
            .unwrap_or_default();
        crate::rollout::Sample {
            requests: self.requests.iter().map(IntCounter::get).sum(),
            errors: self.requests[4].get(),
            buckets,
        }
    }
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: T) -> T {
    registry
        .register(Box::new(c.clone()))
        .expect("each metric is registered once, with a unique name");
    c
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// The counters, registered in a registry of their own.
    pub fn new() -> Metrics {
        let r = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            register(
                &r,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            register(
                &r,
                IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        // Fixed for the life of the process: set once, held by the registry alone.
        register(
            &r,
            IntGauge::with_opts(
                Opts::new(
                    "turnout_build_info",
                    "1, labelled with the serving binary's version.",
                )
                .const_label("version", env!("CARGO_PKG_VERSION")),
            )
            .expect("valid metric"),
        )
        .set(1);
        Metrics {
            requests: counter(
                "turnout_requests_total",
                "Requests answered, by pool and status class.",
                &["pool", "class"],
            ),
            duration: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "turnout_request_duration_seconds",
                        "Time from a request's arrival to its response head, by pool.",
                    )
                    .buckets(vec![
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                        5.0, 10.0, 30.0,
                    ]),
                    &["pool"],
                )
                .expect("valid metric"),
            ),
            grpc: counter(
                "turnout_grpc_calls_total",
                "gRPC calls the app answered, by pool and the grpc-status it ended them with.",
                &["pool", "grpc_code"],
            ),
            retries: counter(
                "turnout_retries_total",
                "Requests sent again to another server of the pool.",
                &["pool"],
            ),
            ejections: counter(
                "turnout_ejections_total",
                "Servers taken out after failing requests in a row.",
                &["pool", "server"],
            ),
            switches: register(
                &r,
                IntCounter::new("turnout_switches_total", "Switches of the active pool.")
                    .expect("valid metric"),
            ),
            rollbacks: register(
                &r,
                IntCounter::new("turnout_rollbacks_total", "Rollbacks to the previous pool.")
                    .expect("valid metric"),
            ),
            rollout_percent: register(
                &r,
                IntGauge::new(
                    "turnout_rollout_percent",
                    "The share of new clients (percent) a guarded rollout gives its target pool now; 0 when none is under way.",
                )
                .expect("valid metric"),
            ),
            rollout_steps: counter(
                "turnout_rollout_steps_total",
                "Guarded rollout steps judged, by verdict (pass, fail).",
                &["verdict"],
            ),
            rollouts: counter(
                "turnout_rollouts_total",
                "Guarded rollouts ended, by outcome (passed, failed, aborted).",
                &["outcome"],
            ),
            in_flight: gauge(
                "turnout_in_flight_requests",
                "Requests whose response has not finished, by pool.",
                &["pool"],
            ),
            tunnels: gauge(
                "turnout_open_tunnels",
                "Upgraded connections (WebSockets) open, by pool.",
                &["pool"],
            ),
            healthy: gauge(
                "turnout_upstream_healthy",
                "1 when a server may take requests (its checks pass and it is not ejected).",
                &["pool", "server"],
            ),
            active: gauge(
                "turnout_active_pool",
                "1 for the pool new requests go to, 0 for the others.",
                &["pool"],
            ),
            weight: gauge(
                "turnout_pool_weight",
                "The pool's weight in the split of new clients (0: it takes none).",
                &["pool"],
            ),
            cache_hits: register(
                &r,
                IntCounter::new(
                    "turnout_cache_hits_total",
                    "Requests answered from the cache.",
                )
                .expect("valid metric"),
            ),
            cache_misses: register(
                &r,
                IntCounter::new(
                    "turnout_cache_misses_total",
                    "Cacheable requests that went upstream (or to disk).",
                )
                .expect("valid metric"),
            ),
            cache_bytes: register(
                &r,
                IntGauge::new("turnout_cache_bytes", "Bytes held in the cache.")
                    .expect("valid metric"),
            ),
            cache_entries: register(
                &r,
                IntGauge::new("turnout_cache_entries", "Entries held in the cache.")
                    .expect("valid metric"),
            ),
            generation: register(
                &r,
                IntGauge::new("turnout_generation", "The routing state's generation.")
                    .expect("valid metric"),
            ),
            maintenance: register(
                &r,
                IntGauge::new("turnout_maintenance", "1 while maintenance mode is on.")
                    .expect("valid metric"),
            ),
            process_generation: register(
                &r,
                IntGauge::new(
                    "turnout_process_generation",
                    "Which process serves: 1 when turnout started, one more per in-place upgrade.",
                )
                .expect("valid metric"),
            ),
            start_time: register(
                &r,
                IntGauge::new(
                    "turnout_start_time_seconds",
                    "When the serving process started, in seconds since the Unix epoch.",
                )
                .expect("valid metric"),
            ),
            paused: register(
                &r,
                IntGauge::new("turnout_paused", "1 while a pause holds new requests.")
                    .expect("valid metric"),
            ),
            held: register(
                &r,
                IntGauge::new("turnout_held_requests", "Requests the current pause holds now.")
                    .expect("valid metric"),
            ),
            held_total: register(
                &r,
                IntGauge::new(
                    "turnout_pause_held_requests",
                    "Requests the current (or last) pause has held in all.",
                )
                .expect("valid metric"),
            ),
            shed_total: register(
                &r,
                IntGauge::new(
                    "turnout_pause_shed_requests",
                    "Requests the current (or last) pause answered 503 (held past max_hold, or shed past its bounds).",
                )
                .expect("valid metric"),
            ),
            tls_not_after: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "turnout_tls_cert_not_after_seconds",
                        "When each certificate of the HTTPS listener expires (Unix time).",
                    ),
                    &["cert", "name"],
                )
                .expect("valid metric"),
            ),
            cutoffs: counter(
                "turnout_client_cutoffs_total",
                "Client connections or requests turnout gave up on, by reason (header_timeout, send_timeout, body_timeout, slow_upload, body_too_large, bad_request, client_abort).",
                &["reason"],
            ),
            limited: counter(
                "turnout_limited_total",
                "Requests over a [limits] rate or in-flight bound, by key class (the rate's name, or in_flight) and outcome (refused, or dry_run: counted only).",
                &["class", "outcome"],
            ),
            connections_limited: counter(
                "turnout_limited_connections_total",
                "Connections over [limits] connections_per_client, by outcome (refused at accept, or dry_run: counted only).",
                &["outcome"],
            ),
            auth: counter(
                "turnout_auth_total",
                "Requests an [[auth]] rule decided, by rule and outcome (allowed, refused, failed: the auth service or key fetch failed).",
                &["rule", "outcome"],
            ),
            compressed: counter(
                "turnout_compressed_total",
                "Responses compressed on the way out, by encoding (gzip, br, zstd) and source (dynamic, cache).",
                &["encoding", "source"],
            ),
            mirror_dropped: register(
                &r,
                IntCounter::new(
                    "turnout_mirror_dropped_total",
                    "Mirrored copies not sent because as many were already in flight (the mirror's bound).",
                )
                .expect("valid metric"),
            ),
            fleet: FleetGauges::new(),
            registry: r,
        }
    }

    /// Counts a mirrored copy dropped at the mirror's bound.
    pub fn mirror_dropped(&self) {
        self.mirror_dropped.inc();
    }

    /// Counts a request over a limit of class `class` (refused, or only counted in dry-run).
    pub fn limited(&self, class: &str, dry_run: bool) {
        let outcome = if dry_run { "dry_run" } else { "refused" };
        self.limited.with_label_values(&[class, outcome]).inc();
    }

    /// Counts a connection over the per-client bound (closed at accept, or only counted).
    pub fn connection_limited(&self, dry_run: bool) {
        let outcome = if dry_run { "dry_run" } else { "refused" };
        self.connections_limited.with_label_values(&[outcome]).inc();
    }

    /// Counts a request an auth rule decided.
    pub fn auth(&self, rule: &str, outcome: &str) {
        self.auth.with_label_values(&[rule, outcome]).inc();
    }

    /// Counts a response compressed with `encoding`, from `source` ("dynamic" or "cache").
    pub fn compressed(&self, encoding: &str, source: &str) {
        self.compressed.with_label_values(&[encoding, source]).inc();
    }

    /// Counts a client cut off (or a request it broke off) for `reason`.
    pub fn client_cutoff(&self, reason: &str) {
        self.cutoffs.with_label_values(&[reason]).inc();
    }

    /// The handles for pool `name`.
    pub fn pool(&self, name: &str) -> PoolMetrics {
        PoolMetrics {
            requests: CLASSES.map(|class| self.requests.with_label_values(&[name, class])),
            duration: self.duration.with_label_values(&[name]),
            retries: self.retries.with_label_values(&[name]),
            grpc: (self.grpc.clone(), name.into()),
        }
    }

    /// `server` of `pool` was ejected.
    pub fn ejected(&self, pool: &str, server: &str) {
        self.ejections.with_label_values(&[pool, server]).inc();
    }

    /// The Prometheus text format, with the gauges set from `gauges` (read from the routing
    /// snapshot now: [`crate::snapshot::RoutingSnapshot::gauges`]).
    pub fn render(
        &self,
        gauges: &Gauges<'_>,
        cache: Option<crate::handles::CacheStats>,
        certs: &[crate::handles::CertInfo],
    ) -> String {
        self.generation.set(gauges.generation as i64);
        self.maintenance.set(i64::from(gauges.maintenance));
        self.paused.set(i64::from(gauges.pause.is_some()));
        self.process_generation
            .set(crate::process::generation() as i64);
        self.start_time.set(
            gauges
                .started_at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
        );
        match &gauges.pause {
            Some(stats) => {
                self.held.set(stats.held as i64);
                self.held_total.set(stats.held_total as i64);
                self.shed_total.set(stats.shed_total as i64);
            }
            None => self.held.set(0),
        }
        self.tls_not_after.reset();
        for cert in certs {
            let name = cert.names.first().map_or("", String::as_str);
            self.tls_not_after
                .with_label_values(&[cert.cert.as_str(), name])
                .set(cert.not_after_unix);
        }
        if let Some(c) = cache {
            self.cache_bytes.set(c.bytes as i64);
            self.cache_entries.set(c.entries as i64);
        }
        self.healthy.reset();
        for pool in &gauges.pools {
            let name = pool.name;
            self.in_flight
                .with_label_values(&[name])
                .set(pool.in_flight as i64);
            self.tunnels
                .with_label_values(&[name])
                .set(pool.tunnels as i64);
            self.active
                .with_label_values(&[name])
                .set(i64::from(pool.active));
            self.weight.with_label_values(&[name]).set(pool.weight);
            for &(server, up) in &pool.servers {
                self.healthy
                    .with_label_values(&[name, server])
                    .set(i64::from(up));
            }
        }
        let mut families = self.registry.gather();
        if let Some(f) = &gauges.fleet {
            self.fleet.set(f);
            families.extend(self.fleet.registry.gather());
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&families, &mut out)
            .expect("the text encoder writes to a Vec");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// What `/metrics` reads from the routing state when it is scraped.
#[derive(Debug)]
pub struct Gauges<'a> {
    /// The routing generation.
    pub generation: u64,
    /// Maintenance mode is on.
    pub maintenance: bool,
    /// The pause's counters, while one is on.
    pub pause: Option<crate::pause::PauseStats>,
    /// When the serving process started.
    pub started_at: std::time::SystemTime,
    /// Every pool's gauges.
    pub pools: Vec<PoolGauges<'a>>,
    /// The fleet this instance follows, with `[fleet]`.
    pub fleet: Option<crate::fleet::FleetStatus>,
}

/// One pool's gauges.
#[derive(Debug)]
pub struct PoolGauges<'a> {
    /// The pool.
    pub name: &'a str,
    /// Requests whose response has not finished.
    pub in_flight: usize,
    /// Open tunnels (WebSockets).
    pub tunnels: usize,
    /// New requests go here.
    pub active: bool,
    /// Its weight in the split of new clients.
    pub weight: i64,
    /// Each server's address and whether it takes requests.
    pub servers: Vec<(&'a str, bool)>,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use turnout_config::Config;

    use crate::snapshot::RoutingSnapshot;

    /// Every `turnout_*` name in `text` (the queries of a dashboard).
    fn names_in(text: &str) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        let mut rest = text;
        while let Some(at) = rest.find("turnout_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            names.insert(name);
        }
        names
    }

    fn exprs(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    match v {
                        serde_json::Value::String(s) if k == "expr" => out.push(s.clone()),
                        _ => exprs(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
            _ => {}
        }
    }

    /// `docker/grafana/turnout.json` is valid JSON whose queries name only metrics turnout
    /// exports: every family of the real registry touched once and rendered, each name the
    /// dashboard uses found among them (a histogram by its `_bucket`, `_sum`, `_count`).
    #[test]
    fn the_grafana_dashboard_names_only_metrics_turnout_exports() {
        let config = Config::parse(
            "[pools.blue]\nservers = [\"127.0.0.1:3000\"]\n[routing]\nactive = \"blue\"\n",
            std::path::Path::new("t.toml"),
        )
        .expect("config");
        let snapshot = RoutingSnapshot::bootstrap(&config, None).expect("snapshot");
        let m = &snapshot.env.metrics;
        m.pool("blue").observe(200, 0.01);
        m.pool("blue").grpc_call(14);
        m.ejected("blue", "127.0.0.1:3000");
        m.client_cutoff("header_timeout");
        m.rollouts.with_label_values(&["passed"]).inc();
        m.rollout_steps.with_label_values(&["pass"]).inc();
        let cert = crate::handles::CertInfo {
            names: vec!["example.test".into()],
            ..Default::default()
        };
        let text = m.render(
            &snapshot.gauges(),
            Some(crate::handles::CacheStats::default()),
            &[cert],
        );
        let mut exported = BTreeSet::new();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
                (words.next(), words.next(), words.next(), words.next())
            {
                exported.insert(name.to_string());
                if kind == "histogram" {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        exported.insert(format!("{name}{suffix}"));
                    }
                }
            }
        }
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docker/grafana/turnout.json"
        );
        let dashboard: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("read the dashboard"))
                .expect("the Grafana dashboard is valid JSON");
        let mut queries = Vec::new();
        exprs(&dashboard, &mut queries);
        assert!(queries.len() >= 10, "{queries:?}");
        let used: BTreeSet<String> = queries.iter().flat_map(|q| names_in(q)).collect();
        let unknown: Vec<&String> = used.difference(&exported).collect();
        assert!(unknown.is_empty(), "not exported by turnout: {unknown:?}");
        // Per instance: a variable of Prometheus's `instance` label (the scrape target, which
        // turnout does not export itself), every selector scoped by it, and the live pool
        // shown for each instance, so that a mixed fleet is seen rather than averaged away.
        let variables = dashboard["templating"]["list"]
            .as_array()
            .expect("templating.list");
        let instance = variables
            .iter()
            .find(|v| v["name"] == "instance")
            .expect("an `instance` variable");
        assert_eq!(instance["includeAll"], true);
        assert!(instance["definition"]
            .as_str()
            .is_some_and(|d| d.contains("instance")));
        for query in &queries {
            let mut rest = query.as_str();
            while let Some(at) = rest.find("turnout_") {
                let tail = &rest[at..];
                let name_len = tail
                    .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                    .unwrap_or(tail.len());
                assert!(
                    tail[name_len..].starts_with("{instance=~\"$instance\""),
                    "{} in `{query}` is not scoped to the chosen instances",
                    &tail[..name_len]
                );
                rest = &tail[name_len..];
            }
        }
        assert!(
            queries
                .iter()
                .any(|q| q.contains("by (instance, pool) (turnout_active_pool")),
            "the live pool is not shown per instance: {queries:?}"
        );
        // And the dashboard shows the families an operator needs.
        for needed in [
            "turnout_requests_total",
            "turnout_request_duration_seconds_bucket",
            "turnout_active_pool",
            "turnout_upstream_healthy",
            "turnout_switches_total",
            "turnout_cache_hits_total",
            "turnout_tls_cert_not_after_seconds",
        ] {
            assert!(
                used.contains(needed),
                "the dashboard does not show {needed}"
            );
        }
    }
}
