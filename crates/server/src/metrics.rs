//! Prometheus metrics, kept in atomics and rendered as the text exposition format on
//! `GET /metrics`. No global registry: each server owns one [`Metrics`], so several servers
//! (e.g. in tests) never mix their figures.
//!
//! | metric | kind | meaning |
//! |---|---|---|
//! | `annals_append_requests_total{api,outcome}` | counter | appends, metadata writes, deletes by API and outcome; `rate()` gives the append rate |
//! | `annals_appended_events_total` | counter | events acknowledged durable |
//! | `annals_appended_bytes_total` | counter | payload bytes acknowledged durable |
//! | `annals_append_commit_seconds` | histogram | time from handing a write to the store to its durable acknowledgement (queueing + write + fdatasync of its group commit) |
//! | `annals_store_group_commits_total`, `annals_store_syncs_total`, `annals_store_records_total` | counter | the backend's own totals, when it reports them ([`StatsSource`]) |
//! | `annals_store_group_commit_size` | gauge | records per group commit, on average since the store opened |
//! | `annals_subscriptions_active{api}` | gauge | open subscriptions (gRPC reads with `subscription`, SSE streams) |
//! | `annals_subscription_lag_positions` | gauge | largest distance between the log head and what a `$all` subscription delivered |
//! | `annals_subscription_delivery_seconds` | histogram | commit → delivery time of live events to subscribers |
//! | `annals_reads_total{api}` | counter | read requests |

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

/// Totals a backend can report (the embedded engine does).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Group commits written.
    pub group_commits: u64,
    /// fdatasync calls.
    pub syncs: u64,
    /// Records written.
    pub records: u64,
}

/// Gives the backend's totals when `/metrics` is scraped.
pub trait StatsSource: Send + Sync {
    /// The current totals.
    fn stats(&self) -> StoreStats;
}

impl<F: Fn() -> StoreStats + Send + Sync> StatsSource for F {
    fn stats(&self) -> StoreStats {
        self()
    }
}

/// Which API served a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Api {
    Grpc,
    Http,
}

impl Api {
    fn label(self) -> &'static str {
        match self {
            Api::Grpc => "grpc",
            Api::Http => "http",
        }
    }
}

/// How a write ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Outcome {
    Ok,
    Conflict,
    Deleted,
    Invalid,
    Error,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Conflict => "wrong_expected_revision",
            Outcome::Deleted => "stream_deleted",
            Outcome::Invalid => "invalid",
            Outcome::Error => "error",
        }
    }

    pub(crate) fn of(error: &annals_core::AppendError) -> Self {
        use annals_core::AppendError as E;
        match error {
            E::WrongExpectedRevision { .. } => Outcome::Conflict,
            E::StreamDeleted { .. } => Outcome::Deleted,
            E::Invalid(_) => Outcome::Invalid,
            _ => Outcome::Error,
        }
    }
}

/// A histogram with fixed bucket bounds (seconds).
#[derive(Debug)]
pub(crate) struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

/// Bounds for latencies from 50 µs to 10 s.
const LATENCY_BOUNDS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub(crate) fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, bucket) in self.bounds.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// One server's metrics.
pub struct Metrics {
    requests: Mutex<HashMap<(Api, Outcome), u64>>,
    reads: [AtomicU64; 2],
    events: AtomicU64,
    bytes: AtomicU64,
    pub(crate) commit: Histogram,
    pub(crate) delivery: Histogram,
    subscriptions: [AtomicI64; 2],
    cursors: Mutex<HashMap<u64, Arc<AtomicU64>>>,
    next_cursor: AtomicU64,
    source: Option<Arc<dyn StatsSource>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn api_index(api: Api) -> usize {
    match api {
        Api::Grpc => 0,
        Api::Http => 1,
    }
}

impl Metrics {
    /// Empty metrics; `source` adds the backend's totals.
    pub fn new(source: Option<Arc<dyn StatsSource>>) -> Self {
        Self {
            requests: Mutex::new(HashMap::new()),
            reads: [AtomicU64::new(0), AtomicU64::new(0)],
            events: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            commit: Histogram::new(LATENCY_BOUNDS),
            delivery: Histogram::new(LATENCY_BOUNDS),
            subscriptions: [AtomicI64::new(0), AtomicI64::new(0)],
            cursors: Mutex::new(HashMap::new()),
            next_cursor: AtomicU64::new(0),
            source,
        }
    }

    pub(crate) fn write_done(&self, api: Api, outcome: Outcome, events: u64, bytes: u64) {
        *self.requests.lock().entry((api, outcome)).or_insert(0) += 1;
        if outcome == Outcome::Ok {
            self.events.fetch_add(events, Ordering::Relaxed);
            self.bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    pub(crate) fn read(&self, api: Api) {
        self.reads[api_index(api)].fetch_add(1, Ordering::Relaxed);
    }

    /// Registers an open subscription; the guard unregisters it when dropped.
    pub(crate) fn subscription(self: &Arc<Self>, api: Api, all: bool) -> SubscriptionGuard {
        self.subscriptions[api_index(api)].fetch_add(1, Ordering::Relaxed);
        let cursor = all.then(|| {
            let id = self.next_cursor.fetch_add(1, Ordering::Relaxed);
            let cell = Arc::new(AtomicU64::new(u64::MAX));
            self.cursors.lock().insert(id, Arc::clone(&cell));
            (id, cell)
        });
        SubscriptionGuard {
            metrics: Arc::clone(self),
            api,
            cursor,
        }
    }

    /// Renders the Prometheus text format. `head` is the next position to be written.
    pub fn render(&self, head: u64) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str(
            "# HELP annals_append_requests_total Write requests (appends, metadata, deletes) by API and outcome.\n\
             # TYPE annals_append_requests_total counter\n",
        );
        let mut requests: Vec<_> = self.requests.lock().iter().map(|(k, v)| (*k, *v)).collect();
        requests.sort_by_key(|((api, outcome), _)| (api.label(), outcome.label()));
        for ((api, outcome), n) in requests {
            let _ = writeln!(
                out,
                "annals_append_requests_total{{api=\"{}\",outcome=\"{}\"}} {n}",
                api.label(),
                outcome.label()
            );
        }
        counter(
            &mut out,
            "annals_appended_events_total",
            "Events acknowledged durable.",
            self.events.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "annals_appended_bytes_total",
            "Payload bytes acknowledged durable.",
            self.bytes.load(Ordering::Relaxed),
        );
        self.commit.render(
            &mut out,
            "annals_append_commit_seconds",
            "Time from handing a write to the store to its durable acknowledgement (includes the group commit's fdatasync).",
        );
        if let Some(source) = &self.source {
            let stats = source.stats();
            counter(
                &mut out,
                "annals_store_group_commits_total",
                "Group commits written.",
                stats.group_commits,
            );
            counter(
                &mut out,
                "annals_store_syncs_total",
                "fdatasync calls on the log.",
                stats.syncs,
            );
            counter(
                &mut out,
                "annals_store_records_total",
                "Records written.",
                stats.records,
            );
            let size = if stats.group_commits == 0 {
                0.0
            } else {
                stats.records as f64 / stats.group_commits as f64
            };
            let _ = writeln!(
                out,
                "# HELP annals_store_group_commit_size Records per group commit, average since open.\n\
                 # TYPE annals_store_group_commit_size gauge\nannals_store_group_commit_size {size}"
            );
        }
        out.push_str(
            "# HELP annals_reads_total Read requests by API.\n# TYPE annals_reads_total counter\n",
        );
        for api in [Api::Grpc, Api::Http] {
            let n = self.reads[api_index(api)].load(Ordering::Relaxed);
            let _ = writeln!(out, "annals_reads_total{{api=\"{}\"}} {n}", api.label());
        }
        out.push_str(
            "# HELP annals_subscriptions_active Open subscriptions by API.\n# TYPE annals_subscriptions_active gauge\n",
        );
        for api in [Api::Grpc, Api::Http] {
            let n = self.subscriptions[api_index(api)].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "annals_subscriptions_active{{api=\"{}\"}} {n}",
                api.label()
            );
        }
        let lag = self
            .cursors
            .lock()
            .values()
            .map(|c| {
                let delivered = c.load(Ordering::Relaxed);
                // u64::MAX: nothing delivered yet, so everything before the head is pending.
                let next = if delivered == u64::MAX {
                    0
                } else {
                    delivered + 1
                };
                head.saturating_sub(next)
            })
            .max()
            .unwrap_or(0);
        let _ = writeln!(
            out,
            "# HELP annals_subscription_lag_positions Largest number of log positions a $all subscription has not yet been sent.\n\
             # TYPE annals_subscription_lag_positions gauge\nannals_subscription_lag_positions {lag}"
        );
        self.delivery.render(
            &mut out,
            "annals_subscription_delivery_seconds",
            "Commit to delivery time of live events sent to subscribers.",
        );
        out
    }
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

/// Keeps a subscription counted while it lives.
#[derive(Debug)]
pub(crate) struct SubscriptionGuard {
    metrics: Arc<Metrics>,
    api: Api,
    cursor: Option<(u64, Arc<AtomicU64>)>,
}

impl SubscriptionGuard {
    /// Records that everything up to `position` was sent.
    pub(crate) fn delivered(&self, position: u64) {
        if let Some((_, cell)) = &self.cursor {
            cell.store(position, Ordering::Relaxed);
        }
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

impl Drop for SubscriptionGuard {
    fn drop(&mut self) {
        self.metrics.subscriptions[api_index(self.api)].fetch_sub(1, Ordering::Relaxed);
        if let Some((id, _)) = &self.cursor {
            self.metrics.cursors.lock().remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new(LATENCY_BOUNDS);
        h.observe(Duration::from_micros(30));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(20));
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.00005\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.005\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"10\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count 3\n"), "{out}");
    }

    #[test]
    fn subscription_lag_follows_the_slowest_all_subscriber() {
        let metrics = Arc::new(Metrics::new(None));
        let fast = metrics.subscription(Api::Http, true);
        let slow = metrics.subscription(Api::Grpc, true);
        fast.delivered(99);
        slow.delivered(89);
        let text = metrics.render(100);
        assert!(
            text.contains("annals_subscription_lag_positions 10\n"),
            "{text}"
        );
        assert!(text.contains("annals_subscriptions_active{api=\"grpc\"} 1\n"));
        drop(slow);
        let text = metrics.render(100);
        assert!(
            text.contains("annals_subscription_lag_positions 0\n"),
            "{text}"
        );
        assert!(text.contains("annals_subscriptions_active{api=\"grpc\"} 0\n"));
    }
}
