//! The daemon's Prometheus metrics, through the `prometheus-client` crate (registry, label
//! families, histograms, its OpenMetrics text encoder), served as `GET /metrics` on the admin
//! listener.
//!
//! Names follow Prometheus' conventions: the `appliance_` prefix, `_total` on counters (the
//! crate adds it), the unit in the name (`_bytes`, `_seconds`). The hot paths hold handles
//! resolved once here (a counter per outcome), so counting a request is an atomic add, not a
//! look-up in a label family.

use appliance_core::journal::TftpEnd;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::time::Duration;

type Labels = Vec<(&'static str, String)>;

/// The `Content-Type` of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// TFTP transfer ends, in the order of [`tftp_index`].
const TFTP_ENDS: [&str; 8] =
    ["complete", "size_probe", "not_found", "refused", "client_error", "timed_out", "failed", "shutdown"];
/// HTTP outcomes: the status class, or a body the client stopped reading.
const HTTP_OUTCOMES: [&str; 5] = ["2xx", "3xx", "4xx", "5xx", "aborted"];
/// DHCP replies (`none`: the request was not answered).
const DHCP_REPLIES: [&str; 4] = ["offer", "ack", "nak", "none"];
const DHCP_MODES: [&str; 3] = ["server", "proxy", "off"];

/// One protocol's transfer metrics.
pub struct Transfers {
    pub sent_bytes: Counter,
    pub duration: Histogram,
    pub in_flight: Gauge,
}

pub struct Metrics {
    registry: Registry,
    tftp_ends: Vec<Counter>,
    http_outcomes: Vec<Counter>,
    /// `[mode][reply]`.
    dhcp: Vec<Vec<(Counter, Counter)>>,
    pub tftp: Transfers,
    pub http: Transfers,
    pub tftp_retransmits: Counter,
    leases: Family<Labels, Gauge>,
    reloads: Family<Labels, Counter>,
    catalog: Family<Labels, Gauge>,
    pub gc_runs: Counter,
    pub gc_freed_bytes: Counter,
    pub lease_write_failures: Counter,
    pub dhcp_acks_withheld: Counter,
    pub journal_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("appliance");
        let requests = Family::<Labels, Counter>::default();
        registry.register("requests", "Requests by protocol and outcome", requests.clone());
        let answers = Family::<Labels, Counter>::default();
        registry.register("dhcp_answers", "DHCP requests by mode and the reply they got", answers.clone());
        let sent = Family::<Labels, Counter>::default();
        registry.register_with_unit("sent", "Payload bytes sent to clients", Unit::Bytes, sent.clone());
        let durations = Family::<Labels, Histogram>::new_with_constructor(|| {
            // 1 ms to about 9 minutes.
            Histogram::new(exponential_buckets(0.001, 4.0, 11))
        });
        registry.register_with_unit(
            "transfer_duration",
            "How long TFTP transfers and HTTP responses took",
            Unit::Seconds,
            durations.clone(),
        );
        let in_flight = Family::<Labels, Gauge>::default();
        registry.register("transfers_in_flight", "TFTP transfers and HTTP responses running now", in_flight.clone());
        let retransmits = Counter::default();
        registry.register("tftp_retransmits", "TFTP DATA and OACK packets sent again", retransmits.clone());
        let leases = Family::<Labels, Gauge>::default();
        registry.register(
            "dhcp_leases",
            "Addresses of the DHCP pool by state (bound, offered, declined, free)",
            leases.clone(),
        );
        let reloads = Family::<Labels, Counter>::default();
        registry.register("reloads", "Config reloads by result (ok, refused)", reloads.clone());
        let catalog = Family::<Labels, Gauge>::default();
        registry.register(
            "catalog_info",
            "The catalog being served: its version and config directory",
            catalog.clone(),
        );
        let gc_runs = Counter::default();
        registry.register("gc_runs", "Runs of the artifact garbage collector", gc_runs.clone());
        let gc_freed = Counter::default();
        registry.register_with_unit("gc_freed", "Bytes of artifact versions removed", Unit::Bytes, gc_freed.clone());
        let lease_write_failures = Counter::default();
        registry.register(
            "dhcp_lease_write_failures",
            "Writes of the lease file that failed",
            lease_write_failures.clone(),
        );
        let dhcp_acks_withheld = Counter::default();
        registry.register(
            "dhcp_acks_withheld",
            "ACKs not sent because the lease they confirm could not be written to disk",
            dhcp_acks_withheld.clone(),
        );
        let journal_dropped = Counter::default();
        registry.register(
            "journal_dropped_records",
            "Journal records dropped because its writer fell behind",
            journal_dropped.clone(),
        );

        let labels =
            |pairs: &[(&'static str, &str)]| -> Labels { pairs.iter().map(|(k, v)| (*k, v.to_string())).collect() };
        let outcome = |protocol: &str, o: &str| {
            requests.get_or_create(&labels(&[("protocol", protocol), ("outcome", o)])).clone()
        };
        let transfers = |protocol: &str| {
            let l = labels(&[("protocol", protocol)]);
            Transfers {
                sent_bytes: sent.get_or_create(&l).clone(),
                duration: durations.get_or_create(&l).clone(),
                in_flight: in_flight.get_or_create(&l).clone(),
            }
        };
        let dhcp = DHCP_MODES
            .iter()
            .map(|m| {
                DHCP_REPLIES
                    .iter()
                    .map(|r| {
                        let answer = answers.get_or_create(&labels(&[("mode", m), ("reply", r)])).clone();
                        (outcome("dhcp", r), answer)
                    })
                    .collect()
            })
            .collect();
        let metrics = Metrics {
            tftp_ends: TFTP_ENDS.iter().map(|o| outcome("tftp", o)).collect(),
            http_outcomes: HTTP_OUTCOMES.iter().map(|o| outcome("http", o)).collect(),
            dhcp,
            tftp: transfers("tftp"),
            http: transfers("http"),
            tftp_retransmits: retransmits,
            leases,
            reloads,
            catalog,
            gc_runs,
            gc_freed_bytes: gc_freed,
            lease_write_failures,
            dhcp_acks_withheld,
            journal_dropped,
            registry,
        };
        for r in ["ok", "refused"] {
            let _ = metrics.reloads.get_or_create(&labels(&[("result", r)]));
        }
        metrics
    }

    /// A finished TFTP transfer (or refused request).
    pub fn tftp_finished(&self, end: &TftpEnd, bytes: u64, retransmits: u64, duration: Duration) {
        self.tftp_ends[tftp_index(end)].inc();
        self.tftp.sent_bytes.inc_by(bytes);
        self.tftp_retransmits.inc_by(retransmits);
        self.tftp.duration.observe(duration.as_secs_f64());
    }

    /// A finished HTTP response: `aborted` when the client stopped before the announced length.
    pub fn http_finished(&self, status: u16, bytes: u64, aborted: bool, duration: Duration) {
        let i = match status {
            _ if aborted => 4,
            200..=299 => 0,
            300..=399 => 1,
            400..=499 => 2,
            _ => 3,
        };
        self.http_outcomes[i].inc();
        self.http.sent_bytes.inc_by(bytes);
        self.http.duration.observe(duration.as_secs_f64());
    }

    /// A DHCP request in `mode` (`server`, `proxy`, `off`) and its reply (`None`: unanswered).
    pub fn dhcp_answered(&self, mode: &str, reply: Option<&str>) {
        let m = DHCP_MODES.iter().position(|x| *x == mode).unwrap_or(2);
        let r =
            reply.map(|r| r.to_ascii_lowercase()).and_then(|r| DHCP_REPLIES.iter().position(|x| *x == r)).unwrap_or(3);
        let (request, answer) = &self.dhcp[m][r];
        request.inc();
        answer.inc();
    }

    pub fn set_leases(&self, usage: &appliance_core::dhcp::leases::Usage) {
        for (state, n) in
            [("bound", usage.bound), ("offered", usage.offered), ("declined", usage.declined), ("free", usage.free)]
        {
            self.leases.get_or_create(&vec![("state", state.to_string())]).set(n as i64);
        }
    }

    pub fn reloaded(&self, ok: bool) {
        let result = if ok { "ok" } else { "refused" };
        self.reloads.get_or_create(&vec![("result", result.to_string())]).inc();
    }

    /// The catalog now served.
    pub fn set_catalog(&self, version: &str, source: &str) {
        self.catalog.clear();
        self.catalog.get_or_create(&vec![("version", version.to_string()), ("config", source.to_string())]).set(1);
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

fn tftp_index(end: &TftpEnd) -> usize {
    TFTP_ENDS.iter().position(|l| *l == end.label()).unwrap_or(6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_land_under_their_labels() {
        let m = Metrics::new();
        m.tftp_finished(&TftpEnd::TimedOut { block: 3, sends: 6 }, 1536, 5, Duration::from_millis(20));
        m.http_finished(200, 100, false, Duration::from_millis(2));
        m.http_finished(200, 10, true, Duration::from_millis(2));
        m.dhcp_answered("proxy", Some("OFFER"));
        m.dhcp_answered("server", None);
        m.set_catalog("abc", "/cfg");
        m.set_catalog("def", "/cfg");
        let text = m.encode();
        for line in [
            r#"appliance_requests_total{protocol="tftp",outcome="timed_out"} 1"#,
            r#"appliance_requests_total{protocol="http",outcome="aborted"} 1"#,
            r#"appliance_requests_total{protocol="dhcp",outcome="offer"} 1"#,
            r#"appliance_dhcp_answers_total{mode="proxy",reply="offer"} 1"#,
            r#"appliance_dhcp_answers_total{mode="server",reply="none"} 1"#,
            r#"appliance_sent_bytes_total{protocol="tftp"} 1536"#,
            r#"appliance_tftp_retransmits_total 5"#,
            r#"appliance_catalog_info{version="def",config="/cfg"} 1"#,
            r#"appliance_reloads_total{result="refused"} 0"#,
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
        assert!(!text.contains(r#"version="abc""#), "the old catalog is gone");
        assert!(text.contains("appliance_transfer_duration_seconds_bucket{"), "{text}");
    }
}
