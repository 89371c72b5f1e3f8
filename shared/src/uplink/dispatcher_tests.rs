//! Dispatcher unit tests: no network, the test plays the connections through the channels.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{Batch, Dispatcher, Outcome};
use crate::uplink::tests::harness::{MemSource, MemWake};
use crate::uplink::{UplinkConfig, UplinkCounters, Wakeup};

struct Rig {
    dispatcher: Dispatcher,
    work: async_channel::Receiver<Batch>,
    outcomes: mpsc::Sender<Outcome>,
    counters: Arc<UplinkCounters>,
    wake: Arc<MemWake>,
    stopping: Arc<AtomicBool>,
}

/// `quantum` bytes per turn, room for `slots` batches in the work channel.
fn rig(sources: &[MemSource], quantum: usize, slots: usize) -> Rig {
    let mut cfg = UplinkConfig::new("intake.test", 10514);
    cfg.quantum_bytes = quantum;
    rig_with(sources, cfg, slots)
}

fn rig_with(sources: &[MemSource], cfg: UplinkConfig, slots: usize) -> Rig {
    let (work_tx, work) = async_channel::bounded(slots);
    let (outcomes, outcome_rx) = mpsc::channel();
    let counters = Arc::new(UplinkCounters::new());
    let wake = Arc::new(MemWake::default());
    let stopping = Arc::new(AtomicBool::new(false));
    let dispatcher = Dispatcher::new(
        &cfg,
        sources.iter().map(MemSource::boxed).collect(),
        work_tx,
        outcome_rx,
        Arc::clone(&wake) as Arc<dyn Wakeup>,
        Arc::clone(&counters),
        Arc::clone(&stopping),
        watch::channel(false).0,
    );
    Rig {
        dispatcher,
        work,
        outcomes,
        counters,
        wake,
        stopping,
    }
}

impl Rig {
    fn take(&self) -> Batch {
        self.work.try_recv().expect("a batch was dispatched")
    }
    fn report(&mut self, outcome: Outcome) {
        self.outcomes.send(outcome).unwrap();
        assert!(self.dispatcher.absorb_outcomes());
    }
}

#[test]
fn commits_only_the_contiguous_confirmed_prefix() {
    let source = MemSource::new("s", 3, 0);
    // A quantum of one byte: one record per batch.
    let mut rig = rig(std::slice::from_ref(&source), 1, 8);
    rig.dispatcher.fill();
    let (b0, b1, b2) = (rig.take(), rig.take(), rig.take());
    assert_eq!([b0.span.start, b1.span.start, b2.span.start], [0, 1, 2]);
    rig.report(Outcome::Confirmed(b2));
    assert!(
        source.commits().is_empty(),
        "2 confirmed but 0 and 1 are not"
    );
    rig.report(Outcome::Confirmed(b0));
    assert_eq!(source.commits(), [1]);
    rig.report(Outcome::Confirmed(b1));
    assert_eq!(source.commits(), [1, 3]);
    assert_eq!(rig.counters.events_sent.load(Ordering::Relaxed), 3);
}

#[test]
fn failed_batches_are_resent_before_new_data() {
    let source = MemSource::new("s", 10, 0);
    let mut rig = rig(std::slice::from_ref(&source), 1, 1);
    rig.dispatcher.fill();
    let first = rig.take();
    rig.dispatcher.fill();
    let second = rig.take();
    assert_eq!((first.span.start, second.span.start), (0, 1));
    rig.report(Outcome::Failed(vec![first, second]));
    assert_eq!(rig.counters.resent_events.load(Ordering::Relaxed), 2);
    let mut order = Vec::new();
    for _ in 0..3 {
        rig.dispatcher.fill();
        order.push(rig.take().span.start);
    }
    assert_eq!(
        order,
        [0, 1, 2],
        "re-sends first, oldest first, then new data"
    );
    assert!(source.commits().is_empty());
}

#[test]
fn round_robin_gives_each_source_one_quantum_per_turn() {
    let noisy = MemSource::new("noisy", 1_000, 100);
    let quiet = MemSource::new("quiet", 2, 100);
    let other = MemSource::new("other", 1_000, 100);
    let mut rig = rig(&[noisy, quiet, other], 1_000, 8);
    rig.dispatcher.fill();
    let mut turns = Vec::new();
    while let Ok(batch) = rig.work.try_recv() {
        assert!(
            batch.data.len() <= 1_000 + 300,
            "one quantum (plus one record) per batch"
        );
        turns.push(batch.source);
    }
    assert_eq!(turns, [0, 1, 2, 0, 2, 0, 2, 0]);
}

#[test]
fn drained_only_when_every_source_is_empty_and_everything_confirmed() {
    let a = MemSource::new("a", 2, 0);
    let b = MemSource::new("b", 1, 0);
    let mut rig = rig(&[a.clone(), b.clone()], 1 << 20, 8);
    assert!(!rig.dispatcher.all_delivered(), "nothing read yet");
    rig.dispatcher.fill();
    let batches: Vec<_> = std::iter::from_fn(|| rig.work.try_recv().ok()).collect();
    assert_eq!(batches.len(), 2);
    assert!(!rig.dispatcher.all_delivered(), "in flight");
    for batch in batches {
        rig.report(Outcome::Confirmed(batch));
    }
    assert!(rig.dispatcher.all_delivered());
    assert_eq!((a.committed_pos(), b.committed_pos()), (2, 1));
}

#[test]
fn source_that_fails_to_read_is_paused_and_reported_while_others_flow() {
    let broken = MemSource::new("broken", 5, 0);
    let fine = MemSource::new("fine", 5, 0);
    broken.set_fail_reads(true);
    let mut rig = rig(&[broken, fine], 1 << 20, 8);
    rig.dispatcher.fill();
    let batch = rig.take();
    assert_eq!((batch.source, batch.span.records), (1, 5));
    let error = rig.counters.snapshot().last_error.unwrap();
    assert!(
        error.contains("reading broken at 0: injected read failure"),
        "{error}"
    );
    assert!(!rig.dispatcher.all_delivered());
}

/// How long `sleep_until_rung` takes when rung `ring_after` into the sleep (never: None).
fn sleep_time(rig: &Rig, ring_after: Option<Duration>) -> Duration {
    let wake = Arc::clone(&rig.wake);
    let ringer = ring_after.map(|after| {
        std::thread::spawn(move || {
            std::thread::sleep(after);
            wake.notify();
        })
    });
    let start = Instant::now();
    rig.dispatcher.sleep_until_rung();
    let slept = start.elapsed();
    if let Some(ringer) = ringer {
        ringer.join().unwrap();
    }
    slept
}

#[test]
fn a_wakeup_from_idle_lingers_so_a_trickle_leaves_as_one_batch() {
    let mut cfg = UplinkConfig::new("intake.test", 10514);
    cfg.idle_wait = Duration::from_secs(5);
    cfg.linger = Duration::from_millis(150);
    let mut rig = rig_with(&[], cfg, 1);
    assert!(!rig.dispatcher.fill(), "no source, no data");
    let slept = sleep_time(&rig, Some(Duration::from_millis(20)));
    assert!(
        slept >= Duration::from_millis(170),
        "rung after 20 ms, then 150 ms of linger: {slept:?}"
    );
    assert!(
        slept < Duration::from_secs(2),
        "woken, not timed out: {slept:?}"
    );

    rig.stopping.store(true, Ordering::Release);
    let slept = sleep_time(&rig, Some(Duration::from_millis(20)));
    assert!(
        slept < Duration::from_millis(150),
        "no linger while stopping: the drain must not wait: {slept:?}"
    );
}

#[test]
fn an_idle_timeout_does_not_linger() {
    let mut cfg = UplinkConfig::new("intake.test", 10514);
    cfg.idle_wait = Duration::from_millis(50);
    cfg.linger = Duration::from_secs(3);
    let rig = rig_with(&[], cfg, 1);
    let slept = sleep_time(&rig, None);
    assert!(
        slept >= Duration::from_millis(50) && slept < Duration::from_secs(2),
        "timed out after idle_wait, no linger: {slept:?}"
    );
}

#[test]
fn waiting_for_room_in_the_channel_does_not_linger() {
    let source = MemSource::new("s", 10, 0);
    let mut cfg = UplinkConfig::new("intake.test", 10514);
    cfg.quantum_bytes = 1;
    cfg.idle_wait = Duration::from_secs(5);
    cfg.linger = Duration::from_secs(3);
    let mut rig = rig_with(std::slice::from_ref(&source), cfg, 1);
    rig.dispatcher.fill();
    assert!(!rig.dispatcher.fill(), "the channel is full: nothing moves");
    let slept = sleep_time(&rig, Some(Duration::from_millis(20)));
    assert!(
        slept < Duration::from_secs(2),
        "a connection took a batch: back to work at once, data is waiting: {slept:?}"
    );
}

/// What a connection does with a batch it wrote: gives the buffer back, keeps the span.
fn spend(rig: &mut Rig, mut batch: Batch) -> (Batch, Vec<u8>) {
    let bytes = batch.data.clone();
    rig.report(Outcome::Spent(std::mem::take(&mut batch.data)));
    assert!(batch.is_spent());
    (batch, bytes)
}

#[test]
fn a_failed_batch_whose_bytes_were_given_back_is_read_again_from_its_source() {
    let source = MemSource::new("s", 4, 0);
    let mut rig = rig(std::slice::from_ref(&source), 1, 2);
    rig.dispatcher.fill();
    let (b0, b1) = (rig.take(), rig.take());
    let (b0, bytes0) = spend(&mut rig, b0);
    let (b1, bytes1) = spend(&mut rig, b1);
    assert_eq!(rig.dispatcher.spare.len(), 2, "written buffers are reused");
    rig.report(Outcome::Failed(vec![b0, b1]));
    rig.dispatcher.fill();
    let (again0, again1) = (rig.take(), rig.take());
    assert_eq!((again0.span.start, again1.span.start), (0, 1));
    assert_eq!((again0.data, again1.data), (bytes0, bytes1));
    assert_eq!(rig.counters.resent_events.load(Ordering::Relaxed), 2);
    assert!(source.commits().is_empty(), "nothing confirmed yet");
}

#[test]
fn a_batch_that_cannot_be_read_again_waits_in_order_and_is_reported() {
    let source = MemSource::new("s", 3, 0);
    let mut rig = rig(std::slice::from_ref(&source), 1, 1);
    rig.dispatcher.fill();
    let (b0, bytes0) = {
        let b = rig.take();
        spend(&mut rig, b)
    };
    source.set_fail_reads(true);
    rig.report(Outcome::Failed(vec![b0]));
    assert!(
        !rig.dispatcher.fill(),
        "its source is paused: nothing goes out"
    );
    let error = rig.counters.snapshot().last_error.unwrap();
    assert!(error.contains("re-reading s at 0"), "{error}");
    source.set_fail_reads(false);
    // The source is read again once its pause is over, not before.
    let paused_at = Instant::now();
    let deadline = paused_at + super::SOURCE_ERROR_PAUSE + Duration::from_secs(5);
    while !rig.dispatcher.fill() {
        assert!(Instant::now() < deadline, "the source was never read again");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        paused_at.elapsed() >= super::SOURCE_ERROR_PAUSE / 2,
        "paused after the failed read"
    );
    let again = rig.take();
    assert_eq!(
        (again.span.start, again.data),
        (0, bytes0),
        "kept, then sent first"
    );
}
