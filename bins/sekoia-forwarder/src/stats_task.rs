//! The monitoring entry (`stats: true`) in the supervisor: every `STATS_INTERVAL` seconds it
//! asks the supervisor's loop for the status (the channel `sekoia-ctl` and Prometheus use),
//! builds the impstats objects (`sekoia_shared::stats`), puts one output line per object in
//! the monitoring entry's queue and appends the objects to `STATS_FILE`.
//!
//! The queue is an intake queue like the others (`QueueKey::STATS`: ring, then journal
//! under the same spill rule, `queue::intake::IntakeWriter`), of which this task is the
//! producer; the uplink drains it with the others, so a destination that is down delays
//! nothing and loses no line while there is room. With `--user`, the queue's files are
//! worked on as that user (as the rest of the supervisor's file work, run_as.rs); the
//! supervisor's loop is single-threaded, so nothing else runs meanwhile.

use std::fs::File;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use nix::fcntl::Flock;
use sekoia_shared::config::ForwarderConfig;
use sekoia_shared::control::server::Pending;
use sekoia_shared::control::status::StatusReport;
use sekoia_shared::log_limit::{Repeating, Report};
use sekoia_shared::queue::intake::{IntakeWriter, JournalOpener, Push, QueueSnapshot};
use sekoia_shared::queue::layout::{InstanceDir, QueueKey, SpoolDir};
use sekoia_shared::queue::{Doorbell, RecordMeta, RingProducer};
use sekoia_shared::stats::{self, Interval, ResourceUsage, StatsFile, StatsObject};
use sekoia_shared::syslog::LocalClock;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::cli::JournalSync;
use crate::run_as::RunAs;

/// Intake id written in the monitoring queue's records (port intakes use 0..n).
pub const STATS_INTAKE_ID: u16 = u16::MAX;

/// The monitoring queue's producer side, held while the task runs.
struct StatsQueue {
    writer: IntakeWriter,
    _producer_lock: Flock<File>,
}

/// The running task; [`StatsTask::stop`] releases the queue before the rings are saved.
pub struct StatsTask {
    handle: tokio::task::JoinHandle<()>,
    queue: Arc<Mutex<Option<StatsQueue>>>,
    run_as: Option<RunAs>,
}

/// Starts the task when the configuration has a monitoring entry (its ring was created
/// with the others, `crate::supervisor::prepare_state`).
pub fn start(
    cfg: &ForwarderConfig,
    state: &InstanceDir,
    sync: JournalSync,
    run_as: Option<&RunAs>,
    requests: mpsc::Sender<Pending>,
) -> Result<Option<StatsTask>> {
    let Some(entry) = &cfg.stats else {
        return Ok(None);
    };
    let queue = as_user(run_as, || open_queue(cfg, state, sync))?;
    let queue = Arc::new(Mutex::new(Some(queue)));
    let every = Duration::from_secs(cfg.settings.stats_interval_secs.max(1));
    let file = StatsFile::new(&cfg.settings.stats_file, stats::ROTATE_AT);
    info!(entry = %entry.name, every_s = every.as_secs(), file = %file.path().display(),
        "monitoring: impstats objects are sent with the entry's key and written to STATS_FILE");
    let producer = Producer {
        cfg: cfg.clone(),
        queue: queue.clone(),
        run_as: run_as.cloned(),
        file,
        file_failing: Repeating::default(),
        dropped: Repeating::default(),
        clock: LocalClock::new(),
        hostname: stats::local_hostname(),
        prev: None,
        prev_queue: QueueSnapshot::default(),
    };
    let handle = tokio::spawn(producer.run(every, requests));
    Ok(Some(StatsTask {
        handle,
        queue,
        run_as: run_as.cloned(),
    }))
}

impl StatsTask {
    /// Stops producing and lets go of the queue (journal synced, locks released).
    pub fn stop(self) {
        self.handle.abort();
        let taken = lock(&self.queue).take();
        if let Some(mut queue) = taken {
            let _ = as_user(self.run_as.as_ref(), || {
                queue.writer.close();
                drop(queue);
                Ok(())
            });
        }
    }
}

fn open_queue(cfg: &ForwarderConfig, state: &InstanceDir, sync: JournalSync) -> Result<StatsQueue> {
    let key = QueueKey::STATS;
    let lock = crate::instance::lock_exclusive(
        state,
        &InstanceDir::producer_lock_name(key),
        "monitoring queue",
    )?;
    let doorbell = Doorbell::create_or_open(&state.doorbell_path())
        .context("cannot open the uplink doorbell")?;
    let path = state.ring_path(key);
    let mut ring = RingProducer::attach_with_doorbell(&path, doorbell.clone())
        .with_context(|| format!("cannot attach ring {}", path.display()))?;
    if let Some(entry) = &cfg.stats {
        ring.set_max_records(Some(entry.queue_size));
    }
    let destination = cfg
        .stats
        .as_ref()
        .map_or(&cfg.settings.destination, |s| &s.destination);
    let budget = crate::budgets::open(state, destination)?;
    let options = crate::journal_options(cfg, sync, &budget);
    let dir = SpoolDir::new(&cfg.settings.spool_dir).journal_dir(key);
    let opener = JournalOpener::new(dir, STATS_INTAKE_ID, budget, options);
    let name = cfg.stats.as_ref().map_or("monitoring", |s| s.name.as_str());
    Ok(StatsQueue {
        writer: IntakeWriter::new(name, ring, opener, doorbell),
        _producer_lock: lock,
    })
}

struct Producer {
    cfg: ForwarderConfig,
    queue: Arc<Mutex<Option<StatsQueue>>>,
    run_as: Option<RunAs>,
    file: StatsFile,
    file_failing: Repeating,
    dropped: Repeating,
    clock: LocalClock,
    hostname: String,
    prev: Option<StatusReport>,
    prev_queue: QueueSnapshot,
}

impl Producer {
    async fn run(mut self, every: Duration, requests: mpsc::Sender<Pending>) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(status) = sekoia_shared::control::server::ask_status(&requests).await else {
                continue;
            };
            self.report(status);
        }
    }

    /// One interval: objects from the status, into the queue and the file.
    fn report(&mut self, status: StatusReport) {
        let Some(queue_now) = self.with_queue(|q| q.writer.snapshot()) else {
            return;
        };
        let pids = status
            .intakes
            .iter()
            .map(|i| &i.worker)
            .chain(status.uplinks.iter().map(|u| &u.worker))
            .filter_map(|w| w.pid);
        let objects = Interval {
            cfg: &self.cfg,
            now: &status,
            prev: self.prev.as_ref(),
            stats_queue: queue_now,
            prev_stats_queue: self.prev_queue,
            usage: ResourceUsage::measure(pids),
        }
        .objects();
        self.enqueue(&objects);
        self.write_file(&objects);
        self.prev = Some(status);
        self.prev_queue = queue_now;
    }

    /// One output line per object into the monitoring queue. A line no tier can take (the
    /// disk budget is used up) is dropped, counted and logged: nothing waits on it.
    fn enqueue(&mut self, objects: &[StatsObject]) {
        let Some(key) = self.cfg.stats.as_ref().map(|s| s.intake_key.clone()) else {
            return;
        };
        let now_us = sekoia_shared::queue::journal::unix_micros();
        let timestamp = self.clock.format(now_us).to_string();
        let mut lines = Vec::new();
        let mut spans = Vec::new();
        for object in objects {
            let start = lines.len();
            stats::render_line(object, &key, &self.hostname, &timestamp, &mut lines);
            spans.push(start..lines.len());
        }
        let meta = RecordMeta {
            intake_id: STATS_INTAKE_ID,
            recv_time_us: now_us,
            flags: 0,
        };
        let held = self.with_queue(|q| {
            let held = spans
                .iter()
                .filter(|span| q.writer.push(&meta, &lines[(*span).clone()]) != Push::Queued)
                .count();
            q.writer.end_batch();
            // One interval's lines are durable as soon as they spilled (at most one fsync).
            q.writer.close();
            held
        });
        if let Some(held) = held.filter(|&h| h > 0) {
            self.note_dropped(held);
        }
    }

    fn note_dropped(&mut self, lines: usize) {
        match self.dropped.occurred(std::time::Instant::now()) {
            Some(Report::Started) => warn!(lines,
                "monitoring: the queue cannot take this interval's lines (memory and disk budget full); they are dropped"),
            Some(Report::Ongoing { count, total, .. }) => warn!(lines, count, total,
                "monitoring: intervals still dropped (memory and disk budget full)"),
            _ => {}
        }
    }

    fn write_file(&mut self, objects: &[StatsObject]) {
        let stamp = stats::ctime_stamp(chrono::Local::now());
        let lines: Vec<String> = objects.iter().map(StatsObject::to_json).collect();
        let now = std::time::Instant::now();
        match self.file.append(&stamp, &lines) {
            Ok(()) => {
                if let Some(Report::Ended { total, .. }) = self.file_failing.cleared(now) {
                    info!(file = %self.file.path().display(), failures = total, "STATS_FILE is written again");
                }
            }
            Err(e) => match self.file_failing.occurred(now) {
                Some(Report::Started) => warn!(file = %self.file.path().display(), error = %e,
                    "cannot write STATS_FILE; the objects are still sent (retried every interval)"),
                Some(Report::Ongoing { count, total, .. }) => {
                    warn!(file = %self.file.path().display(),
                    error = %e, count, total, "STATS_FILE still cannot be written")
                }
                _ => {}
            },
        }
    }

    /// Runs `f` on the queue, as the workers' user when there is one. None once stopped, or
    /// when the user switch failed (logged).
    fn with_queue<T>(&self, f: impl FnOnce(&mut StatsQueue) -> T) -> Option<T> {
        let mut guard = lock(&self.queue);
        let queue = guard.as_mut()?;
        as_user(self.run_as.as_ref(), || Ok(f(queue)))
            .map_err(|e| warn!(error = %e, "monitoring: cannot work on the queue"))
            .ok()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn as_user<T>(run_as: Option<&RunAs>, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match run_as {
        Some(user) => user.as_user(f),
        None => f(),
    }
}
