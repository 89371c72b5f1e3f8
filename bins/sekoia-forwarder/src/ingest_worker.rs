//! The ingest worker: one intake's port → framing → sanitise/parse/render → its ring.
//!
//! Rendering happens here so the uplink only moves bytes. Each read's frames are rendered
//! into a per-thread batch outside any lock, then pushed into the ring under the producer
//! lock with one publish (one Release store, at most one doorbell wake-up) per batch. When the
//! ring is full the sink accepts fewer frames and the input applies back-pressure (TCP/TLS)
//! or drops and counts (UDP).

use std::cell::RefCell;
use std::io::Write;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};
use sekoia_shared::config::{Intake, Protocol};
use sekoia_shared::input::{self, Frame, InputCounters, MessageSink, Resolver};
use sekoia_shared::queue::{Doorbell, RecordMeta, RingProducer};
use sekoia_shared::syslog::{render_event, EventContext, LocalClock};
use tracing::{error, info};

use crate::cli::IngestWorkerArgs;
use crate::instance;

const FLAG_TRUNCATED: u16 = 1;
/// How often drops and errors are reported in the log.
const REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

pub fn run(args: &IngestWorkerArgs) -> Result<()> {
    instance::die_with_supervisor()?;
    let cfg = instance::read_config(&args.state_dir)?;
    let intake = cfg
        .intakes
        .iter()
        .find(|i| i.id == args.intake_id)
        .cloned()
        .ok_or_else(|| anyhow!("intake id {} is not in the configuration", args.intake_id))?;
    let ring_path = instance::ring_path(&args.state_dir, &intake);
    let _producer_lock = instance::lock_exclusive(
        &ring_path.with_extension("ring.producer.lock"),
        "ingest worker",
    )?;
    let doorbell = Doorbell::create_or_open(&instance::doorbell_path(&args.state_dir))
        .context("cannot open the uplink doorbell")?;
    let producer = RingProducer::attach_with_doorbell(&ring_path, doorbell)
        .with_context(|| format!("cannot attach ring {}", ring_path.display()))?;

    let sink = Arc::new(RingSink {
        intake: intake.clone(),
        producer: Mutex::new(producer),
        rejected: AtomicU64::new(0),
    });
    let resolver = Arc::new(Resolver::new(cfg.settings.resolve_hostnames));
    let counters = Arc::new(InputCounters::default());

    crate::worker_runtime::runtime("ingest")?.block_on(serve(intake, sink, resolver, counters))
}

async fn serve(
    intake: Intake,
    sink: Arc<RingSink>,
    resolver: Arc<Resolver>,
    counters: Arc<InputCounters>,
) -> Result<()> {
    let stop_rx = crate::worker_runtime::stop_on_sigterm()?;
    let mut fds = listenfd::ListenFd::from_env();
    info!(intake = %intake.name, port = intake.port, "ingest worker serving");
    let sink_dyn: Arc<dyn MessageSink> = sink;
    let reporter = tokio::spawn(crate::input_report::report_periodically(
        intake.name.clone(),
        counters.clone(),
        REPORT_EVERY,
    ));
    match intake.protocol {
        Protocol::Udp => {
            let socket = fds
                .take_udp_socket(0)
                .context("cannot take the inherited UDP socket")?
                .ok_or_else(|| anyhow!("no UDP socket inherited (LISTEN_FDS)"))?;
            input::serve_udp(socket, sink_dyn, resolver, counters.clone(), stop_rx).await?;
        }
        Protocol::Tcp => {
            let listener = take_tcp(&mut fds)?;
            input::serve_tcp(listener, sink_dyn, resolver, counters.clone(), stop_rx).await?;
        }
        Protocol::Tls => {
            let files = intake
                .tls
                .as_ref()
                .ok_or_else(|| anyhow!("tls intake without certificate files"))?;
            let tls = input::load_server_tls(&files.key, &files.cert)?;
            let listener = take_tcp(&mut fds)?;
            input::serve_tls(
                listener,
                Arc::new(tls),
                sink_dyn,
                resolver,
                counters.clone(),
                stop_rx,
            )
            .await?;
        }
    }
    reporter.abort();
    crate::input_report::report_totals(&intake.name, &counters);
    info!(intake = %intake.name, "ingest worker stopped");
    Ok(())
}

fn take_tcp(fds: &mut listenfd::ListenFd) -> Result<std::net::TcpListener> {
    fds.take_tcp_listener(0)
        .context("cannot take the inherited TCP listener")?
        .ok_or_else(|| anyhow!("no TCP listener inherited (LISTEN_FDS)"))
}

/// Renders frames and appends them to the intake's ring.
struct RingSink {
    intake: Intake,
    producer: Mutex<RingProducer>,
    /// Records the ring refused as invalid (a bug if ever non-zero): counted, never retried.
    rejected: AtomicU64,
}

/// Per-thread buffers: no allocation per event once warm.
struct RenderBuffers {
    clock: LocalClock,
    scratch: Vec<u8>,
    batch: Vec<u8>,
    /// For each rendered frame: its wire bytes and the output line without the length prefix.
    spans: Vec<(Range<usize>, Range<usize>, bool)>,
}

thread_local! {
    static BUFFERS: RefCell<RenderBuffers> = RefCell::new(RenderBuffers {
        clock: LocalClock::new(),
        scratch: Vec::new(),
        batch: Vec::new(),
        spans: Vec::new(),
    });
}

impl MessageSink for RingSink {
    fn deliver(&self, _peer: SocketAddr, host: &str, frames: &[Frame<'_>]) -> usize {
        let now_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        BUFFERS.with(|cell| {
            let mut guard = cell.borrow_mut();
            let RenderBuffers {
                clock,
                scratch,
                batch,
                spans,
            } = &mut *guard;
            batch.clear();
            spans.clear();
            let ctx = EventContext {
                intake_key: &self.intake.intake_key,
                sender_host: host,
                timestamp: clock.format(now_us),
            };
            for frame in frames {
                let start = batch.len();
                let line = render_event(frame.bytes, &ctx, scratch, batch);
                spans.push((start..batch.len(), line, frame.truncated));
            }
            let accepted = self.push(batch, spans, now_us);
            if self.intake.debug {
                self.print_debug(frames, batch, &spans[..accepted]);
            }
            accepted
        })
    }
}

impl RingSink {
    fn push(
        &self,
        batch: &[u8],
        spans: &[(Range<usize>, Range<usize>, bool)],
        now_us: i64,
    ) -> usize {
        let mut producer = match self.producer.lock() {
            Ok(p) => p,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut accepted = 0;
        for (wire, _, truncated) in spans {
            let meta = RecordMeta {
                intake_id: self.intake.id,
                recv_time_us: now_us,
                flags: if *truncated { FLAG_TRUNCATED } else { 0 },
            };
            match producer.try_push(&meta, &batch[wire.clone()]) {
                Ok(true) => accepted += 1,
                Ok(false) => break,
                Err(e) => {
                    let n = self.rejected.fetch_add(1, Ordering::Relaxed) + 1;
                    error!(intake = %self.intake.name, error = %e, rejected = n,
                        "ring refused a record; it is dropped");
                    accepted += 1;
                }
            }
        }
        producer.publish();
        accepted
    }

    /// `debug: true`: the reference printed `[Input "KEY"] raw` and `[Output "KEY"] line`.
    fn print_debug(
        &self,
        frames: &[Frame<'_>],
        batch: &[u8],
        spans: &[(Range<usize>, Range<usize>, bool)],
    ) {
        let key = &self.intake.intake_key;
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        for (frame, (_, line, _)) in frames.iter().zip(spans) {
            let _ = write!(out, "[Input \"{key}\"] ");
            let _ = out.write_all(frame.bytes);
            let _ = writeln!(out);
            let _ = write!(out, "[Output \"{key}\"] ");
            let _ = out.write_all(&batch[line.clone()]);
        }
        let _ = out.flush();
    }
}
