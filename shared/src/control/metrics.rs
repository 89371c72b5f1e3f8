//! Prometheus exposition at `METRICS_LISTEN` (opt-in): the same [`StatusReport`] that
//! `sekoia-ctl status` shows, encoded by `prometheus-client` in the OpenMetrics text format
//! on `GET /metrics`. Counters restart from 0 when a worker restarts; `rate()` handles that.
//!
//! The HTTP side is deliberately tiny (one bounded request head, one answer, close): it
//! serves a scraper on a local address, not the Internet.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};

use super::server::Pending;
use super::status::{StatusReport, WorkerState};
use super::CLIENT_TIMEOUT;
use crate::queue::intake::QueueSnapshot;
use crate::uplink::UplinkSnapshot;

/// Scrapes served at once.
const MAX_SCRAPERS: usize = 8;
/// Longest request head read.
const MAX_HEAD: usize = 8 * 1024;

/// The OpenMetrics text of `status`.
pub fn encode(status: &StatusReport) -> String {
    let mut registry = Registry::with_prefix("sekoia_forwarder");
    registry.register_collector(Box::new(StatusCollector(Arc::new(status.clone()))));
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    text
}

#[derive(Debug)]
struct StatusCollector(Arc<StatusReport>);

type Labels = Vec<(&'static str, String)>;

/// One metric family: name (without the prefix or `_total`), help, then one value per label set.
fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: Vec<(Labels, M)>,
) -> Result<(), std::fmt::Error> {
    let Some(kind) = samples.first().map(|(_, m)| m.metric_type()) else {
        return Ok(());
    };
    let mut family = encoder.encode_descriptor(name, help, None, kind)?;
    if let [(labels, _)] = samples.as_slice() {
        if labels.is_empty() {
            // One unlabelled value: `name 5`, not `name{} 5`.
            return match samples.into_iter().next() {
                Some((_, metric)) => metric.encode(family),
                None => Ok(()),
            };
        }
    }
    for (labels, metric) in samples {
        metric.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for StatusCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let intake_labels = |i: &super::status::IntakeStatus| -> Labels {
            vec![("intake", i.name.clone()), ("protocol", i.protocol.clone())]
        };
        let per_intake = |f: &dyn Fn(&crate::input::InputCountersSnapshot) -> u64| {
            s.intakes
                .iter()
                .map(|i| {
                    (
                        intake_labels(i),
                        ConstCounter::new(i.input.map_or(0, |c| f(&c))),
                    )
                })
                .collect::<Vec<_>>()
        };
        let e = &mut encoder;
        family(
            e,
            "events_received",
            "Events framed from the network.",
            per_intake(&|c| c.received),
        )?;
        family(
            e,
            "received_bytes",
            "Payload bytes read (after TLS).",
            per_intake(&|c| c.bytes_received),
        )?;
        family(
            e,
            "events_dropped",
            "Events dropped because the queue was full (UDP).",
            per_intake(&|c| c.dropped_full),
        )?;
        family(
            e,
            "events_truncated",
            "Events longer than the limit, delivered truncated.",
            per_intake(&|c| c.truncated),
        )?;
        family(
            e,
            "frames_discarded",
            "Octet-counted frames cut short by the peer, discarded.",
            per_intake(&|c| c.partial_discarded),
        )?;
        family(
            e,
            "connections_accepted",
            "Connections accepted.",
            per_intake(&|c| c.connections_total),
        )?;
        family(
            e,
            "tls_handshake_failures",
            "TLS handshakes that failed or timed out.",
            per_intake(&|c| c.tls_handshake_failures),
        )?;
        family(
            e,
            "read_errors",
            "Failed reads (the connection was closed).",
            per_intake(&|c| c.read_errors),
        )?;
        family(
            e,
            "resolve_timeouts",
            "New senders shown by IP because reverse DNS was slow.",
            per_intake(&|c| c.resolve_timeouts),
        )?;
        let sent = |f: &dyn Fn(&super::status::IntakeStatus) -> u64| {
            s.intakes
                .iter()
                .map(|i| (intake_labels(i), ConstCounter::new(f(i))))
                .collect::<Vec<_>>()
        };
        family(
            e,
            "events_sent",
            "The intake's events confirmed received by the destination.",
            sent(&|i| i.events_sent),
        )?;
        family(
            e,
            "events_resent",
            "The intake's events sent again after a broken connection.",
            sent(&|i| i.events_resent),
        )?;
        let gauges = |f: &dyn Fn(&super::status::IntakeStatus) -> u64| {
            s.intakes
                .iter()
                .map(|i| (intake_labels(i), ConstGauge::new(f(i) as i64)))
                .collect::<Vec<_>>()
        };
        family(
            e,
            "connections",
            "Connections open now.",
            gauges(&|i| i.input.map_or(0, |c| c.connections_open)),
        )?;
        family(
            e,
            "journal_bytes",
            "Bytes of the intake's journal files on disk.",
            gauges(&|i| i.journal_bytes),
        )?;
        let queue = |f: fn(&QueueSnapshot) -> u64| gauges(&move |i| i.queue.map_or(0, |q| f(&q)));
        family(
            e,
            "memory_backlog_events",
            "Events in the intake's ring (memory), not yet delivered.",
            queue(|q| q.ring_events),
        )?;
        family(
            e,
            "memory_backlog_bytes",
            "Bytes of the events in the intake's ring, not yet delivered.",
            queue(|q| q.ring_bytes),
        )?;
        family(
            e,
            "disk_backlog_events",
            "Events in the intake's journal (disk), not yet delivered.",
            queue(|q| q.journal_events),
        )?;
        let ages = s
            .intakes
            .iter()
            .filter_map(|i| Some((intake_labels(i), i.queue?.oldest_age_ms?)))
            .map(|(labels, ms)| (labels, ConstGauge::new(ms as f64 / 1000.0)))
            .collect();
        family(
            e,
            "oldest_event_age_seconds",
            "How long the oldest event the intake holds has waited (absent when none, or unknown).",
            ages,
        )?;
        self.encode_workers(e)?;
        self.encode_uplink(e)?;
        let disk = |v: u64| vec![(Labels::new(), ConstGauge::new(v as i64))];
        family(
            e,
            "disk_limit_bytes",
            "The journals' bound in force: the smaller of DISK_SPACE and the spool's room.",
            disk(s.disk.limit_bytes),
        )?;
        family(
            e,
            "disk_configured_bytes",
            "DISK_SPACE as configured.",
            disk(s.disk.configured_bytes),
        )?;
        family(
            e,
            "disk_used_bytes",
            "What the journals hold now.",
            disk(s.disk.used_bytes),
        )?;
        Ok(())
    }
}

impl StatusCollector {
    fn encode_workers(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let workers: Vec<(Labels, &super::status::WorkerStatus)> = s
            .intakes
            .iter()
            .map(|i| (vec![("worker", format!("ingest:{}", i.name))], &i.worker))
            .chain(uplinks(s).into_iter().map(|u| {
                (
                    vec![("worker", format!("uplink:{}", u.destination))],
                    &u.worker,
                )
            }))
            .collect();
        let up = workers
            .iter()
            .map(|(l, w)| {
                let running = matches!(w.state, WorkerState::Running | WorkerState::Starting);
                (l.clone(), ConstGauge::new(i64::from(running)))
            })
            .collect();
        family(
            e,
            "worker_up",
            "1 when the worker process runs and reports.",
            up,
        )?;
        let restarts = workers
            .iter()
            .map(|(l, w)| (l.clone(), ConstCounter::new(w.restarts)))
            .collect();
        family(
            e,
            "worker_restarts",
            "Worker restarts since the supervisor started.",
            restarts,
        )
    }

    /// The uplink families, one series per destination (`destination` label).
    fn encode_uplink(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let all: Vec<(Labels, UplinkSnapshot)> = uplinks(&self.0)
            .into_iter()
            .map(|u| {
                let labels = vec![("destination", u.destination.clone())];
                (labels, u.counters.clone().unwrap_or_default())
            })
            .collect();
        let counter = |f: fn(&UplinkSnapshot) -> u64| {
            all.iter()
                .map(|(l, c)| (l.clone(), ConstCounter::new(f(c))))
                .collect::<Vec<_>>()
        };
        let counters: [UplinkFamily; 8] = [
            (
                "uplink_events_sent",
                "Events confirmed received by the destination.",
                |c| c.events_sent,
            ),
            (
                "uplink_sent_bytes",
                "Payload bytes confirmed received by the destination.",
                |c| c.bytes_sent,
            ),
            (
                "uplink_events_resent",
                "Events sent again after a broken connection.",
                |c| c.resent_events,
            ),
            (
                "uplink_connect_failures",
                "Resolve or TCP connect failures.",
                |c| c.connect_failures,
            ),
            (
                "uplink_tls_failures",
                "TLS handshake or certificate failures.",
                |c| c.tls_failures,
            ),
            (
                "uplink_write_failures",
                "Connections that broke with unconfirmed data.",
                |c| c.write_failures,
            ),
            (
                "uplink_relp_sessions",
                "RELP sessions opened (RELP output).",
                |c| c.relp_sessions,
            ),
            (
                "uplink_relp_acknowledged",
                "Events the RELP receiver answered (RELP output).",
                |c| c.relp_acknowledged,
            ),
        ];
        for (name, help, f) in counters {
            family(e, name, help, counter(f))?;
        }
        let up = all
            .iter()
            .map(|(l, c)| (l.clone(), ConstGauge::new(c.connections_up as i64)))
            .collect();
        family(
            e,
            "uplink_connections",
            "Uplink TLS connections up now.",
            up,
        )?;
        let window = all
            .iter()
            .map(|(l, c)| (l.clone(), ConstGauge::new(c.relp_window_in_use as i64)))
            .collect();
        family(
            e,
            "uplink_relp_window_in_use",
            "Events sent over RELP and not answered yet.",
            window,
        )
    }
}

/// An uplink counter family: name, help, and the counter.
type UplinkFamily = (&'static str, &'static str, fn(&UplinkSnapshot) -> u64);

/// Every destination's uplink (the single `uplink` of a report without `uplinks`).
fn uplinks(s: &StatusReport) -> Vec<&super::status::UplinkStatus> {
    if s.uplinks.is_empty() {
        vec![&s.uplink]
    } else {
        s.uplinks.iter().collect()
    }
}

/// Serves `GET /metrics` on `listener`, asking the supervisor's loop for the status.
pub async fn serve(listener: TcpListener, to_supervisor: mpsc::Sender<Pending>) {
    let slots = Arc::new(Semaphore::new(MAX_SCRAPERS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let to_supervisor = to_supervisor.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _ = tokio::time::timeout(CLIENT_TIMEOUT * 2, scrape(stream, to_supervisor)).await;
        });
    }
}

async fn scrape(mut stream: TcpStream, to_supervisor: mpsc::Sender<Pending>) {
    let Ok(Some(head)) = tokio::time::timeout(CLIENT_TIMEOUT, read_head(&mut stream)).await else {
        return;
    };
    let answer = if head.starts_with(b"GET /metrics ") || head.starts_with(b"GET /metrics?") {
        match super::server::ask_status(&to_supervisor).await {
            Some(s) => http(
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                &encode(&s),
            ),
            None => http("503 Service Unavailable", "text/plain", "stopping\n"),
        }
    } else {
        http("404 Not Found", "text/plain", "try /metrics\n")
    };
    let _ = stream.write_all(answer.as_bytes()).await;
}

/// Reads until the blank line that ends an HTTP request head; `None` if too long or cut.
async fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || head.len() + n > MAX_HEAD {
            return None;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    Some(head)
}

fn http(status: &str, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}
