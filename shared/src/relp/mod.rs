//! RELP, the Reliable Event Logging Protocol (rsyslog's `librelp`), client side: the frames, the
//! `open` offer and its answer, and the window of unacknowledged transactions. No I/O here: the
//! uplink (`uplink/relp_session.rs`) moves the bytes.
//!
//! ```text
//! frame    = TXNR SP COMMAND SP DATALEN [SP DATA] TRAILER
//! TXNR     = 1-9 digits, 1..=999_999_999, +1 per command, wraps to 1; 0 only in `serverclose`
//! COMMAND  = 1-32 letters: open, syslog, close (client); rsp, serverclose (server)
//! DATALEN  = 1-9 digits, the byte length of DATA (0: no SP DATA)
//! TRAILER  = LF
//! rsp DATA = CODE(3 digits) SP TEXT [LF offers]          e.g. "200 OK"
//! offers   = name[=value] separated by LF                 relp_version=0, commands=syslog
//! ```
//!
//! A session: the client sends `open` with its offers (txnr 1) and waits for the `rsp`; the
//! server must answer 200, `relp_version=0` and a `commands` offer that includes `syslog`, or
//! the session is refused (`offer`). Then every event is one `syslog` command carrying the
//! output line (without the octet count of plain TLS syslog), at most `window` of them without
//! an answer; each is acknowledged by an `rsp` with the same txnr (`window`). The client ends with
//! `close`; a server about to close sends `0 serverclose 0`. The server checks that txnrs follow
//! each other (librelp answers a gap with `serverclose`), so they are never skipped.
//!
//! What the server sends is bounded: a frame announcing more than [`MAX_PEER_DATA`] bytes is an
//! error before any of it is buffered (`frame`).

mod frame;
mod octet;
mod offer;
mod window;

pub use frame::{encode, Frame, FrameError, FrameReader, MAX_PEER_DATA};
pub use octet::{OctetError, OctetLines};
pub use offer::{client_offer, Offers, Response, ResponseError};
pub use window::{Txnr, Window, WindowError};

/// Command names.
pub const OPEN: &str = "open";
pub const SYSLOG: &str = "syslog";
pub const CLOSE: &str = "close";
pub const RSP: &str = "rsp";
pub const SERVERCLOSE: &str = "serverclose";

/// Default number of unanswered `syslog` commands per session: librelp's default window, which
/// rsyslog's omrelp uses unless `windowSize` is set.
pub const DEFAULT_WINDOW: u32 = 128;
