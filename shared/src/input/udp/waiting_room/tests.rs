//! Waiting-room bounds, driven directly (no socket) with a gated resolver.

use super::*;
use crate::input::testing::{wait_for, GatedLookup, RecordingSink};
use std::time::Duration;

const PATIENCE: Duration = Duration::from_secs(10);

fn frame(bytes: &[u8]) -> Frame<'_> {
    Frame {
        bytes,
        truncated: false,
    }
}

#[tokio::test]
async fn datagram_beyond_the_total_bound_releases_its_sender_at_once_in_order() {
    let gate = GatedLookup::new();
    let names = gate.resolver("127.0.0.2".parse().unwrap(), PATIENCE);
    let sink = RecordingSink::new();
    let counters = InputCounters::new();
    let out = Outlet {
        sink: sink.as_ref(),
        names: &names,
        counters: &counters,
    };
    let limits = RoomLimits {
        total_datagrams: 3,
        ..RoomLimits::default()
    };
    let mut room = WaitingRoom::new(limits);
    let a: SocketAddr = "127.0.0.2:5000".parse().unwrap();
    assert!(matches!(room.route(a.ip(), &names), Route::Hold));
    room.hold(a, &[frame(b"a1"), frame(b"a2")], &out);
    assert!(matches!(room.route(a.ip(), &names), Route::Hold));
    room.hold(a, &[frame(b"a3")], &out);
    assert_eq!(sink.count(), 0, "3 datagrams fit");
    room.hold(a, &[frame(b"a4")], &out);
    assert_eq!(
        sink.texts(),
        ["a1", "a2", "a3", "a4"],
        "overflow: all at once, in order"
    );
    assert_eq!(counters.snapshot().resolve_wait_overflows, 1);
    assert!(
        matches!(room.route(a.ip(), &names), Route::Now(ref h) if &**h == "127.0.0.2"),
        "after an overflow the sender goes out at once"
    );
    assert_eq!(
        (room.datagrams, room.bytes),
        (0, 0),
        "nothing held any more"
    );
    gate.open();
    wait_for(PATIENCE, "the answer", || gate.answered()).await;
    let done = room.next_done().await.expect("one wait");
    room.release(done, &out);
    assert!(!room.is_waiting());
    assert_eq!(counters.snapshot().resolve_timeouts, 0);
    assert!(
        matches!(room.route(a.ip(), &names), Route::Now(ref h) if &**h == "slow.example"),
        "named once the lookup answered"
    );
}

#[tokio::test]
async fn shutdown_delivers_everything_held() {
    let gate = GatedLookup::new();
    let names = gate.resolver("127.0.0.2".parse().unwrap(), PATIENCE);
    let sink = RecordingSink::new();
    let counters = InputCounters::new();
    let out = Outlet {
        sink: sink.as_ref(),
        names: &names,
        counters: &counters,
    };
    let mut room = WaitingRoom::new(RoomLimits::default());
    let a: SocketAddr = "127.0.0.2:5000".parse().unwrap();
    let b: SocketAddr = "127.0.0.2:5001".parse().unwrap();
    assert!(matches!(room.route(a.ip(), &names), Route::Hold));
    room.hold(a, &[frame(b"a1")], &out);
    room.hold(b, &[frame(b"b1")], &out);
    room.hold(a, &[frame(b"a2")], &out);
    room.release_all(&out);
    assert_eq!(sink.texts(), ["a1", "b1", "a2"]);
    assert_eq!(
        sink.calls.lock().unwrap().len(),
        3,
        "one call per run of a port"
    );
    gate.open();
}
