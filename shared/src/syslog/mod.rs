//! Turns one framed raw syslog message into the output line the Sekoia intake expects,
//! byte for byte what the reference rsyslog image produces with its template
//!
//! ```text
//! <%pri%>1 %timegenerated:::date-rfc3339% %hostname% %app-name% %procid% LOG
//!     [SEKOIA@53288 intake_key="KEY"] %msg:R,ERE,1,FIELD:^[ \t]*(.*)$--end%\n
//! ```
//!
//! sent octet-counted (`LEN SP LINE`). The data path is: [`sanitise`] (control bytes →
//! `#ooo`) → [`pri`] → [`rfc5424`], else [`rfc3164`] → [`render`]. On the input side the
//! ingest worker calls [`render_event`] once per frame; its output goes into the ring and from
//! there unchanged to the uplink. [`LocalClock`] formats the reception time.
//!
//! Invariants: `render_event` never fails and never panics, whatever the bytes; it appends
//! exactly one `LEN SP LINE` where LINE ends with its only `\n` (unless cut at `MAX_MESSAGE`
//! bytes, as the reference does); once `scratch` and `out`
//! have grown to the largest message seen it does not allocate. Each rule is documented in
//! the file that implements it, with the rsyslog behaviour it reproduces (checked against
//! rsyslogd 8.2302 and rsyslog's `parser.c`, `datetime.c`, `pmrfc5424.c`, `pmrfc3164.c`,
//! `msg.c`). Our one deviation: an invalid PRI renders as `<13>` instead of `<invld>`.

mod clock;
mod pri;
mod render;
mod rfc3164;
mod rfc5424;
mod sanitise;
mod timestamp;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod verified_cases;

pub use clock::LocalClock;

/// The steps of [`render_event`] one by one, for the fuzz targets (`fuzz/`) and the property
/// tests (`shared/tests/properties.rs`). Not an API: names and shapes follow the code.
#[doc(hidden)]
pub mod internals {
    pub use super::pri::{parse_pri, Pri, DEFAULT_PRI};
    pub use super::rfc3164::parse as parse_rfc3164;
    pub use super::rfc5424::parse as parse_rfc5424;
    pub use super::sanitise::sanitise;
    pub use super::Fields;
}

/// Largest message accepted, in bytes (the reference's `maxMessageSize="250k"`); longer
/// messages are truncated by the input. Sanitising never makes a message longer than this.
pub const MAX_MESSAGE: usize = 256_000;

/// What `render_event` needs besides the raw message.
#[derive(Debug, Clone, Copy)]
pub struct EventContext<'a> {
    /// The intake key put in the structured data.
    pub intake_key: &'a str,
    /// Used when the message carries no hostname: resolved name or IP text.
    pub sender_host: &'a str,
    /// Reception time, from [`LocalClock::format`].
    pub timestamp: &'a str,
}

/// The header fields a parser found, as slices of the sanitised message.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fields<'a> {
    /// None: the message carries no hostname; the sender's is used.
    pub hostname: Option<&'a [u8]>,
    /// Rendered verbatim (parsers already put `-` where rsyslog shows it).
    pub app_name: &'a [u8],
    pub procid: &'a [u8],
    /// The MSG part, before leading spaces are removed.
    pub msg: &'a [u8],
}

/// Renders a line the forwarder makes itself (the monitoring objects, `stats`): the same
/// template and framing as [`render_event`], with the header fields given instead of parsed
/// and `ctx.sender_host` as the hostname. Returns the range of the line without `LEN SP`.
pub fn render_generated(
    pri: u8,
    app_name: &str,
    msg: &str,
    ctx: &EventContext<'_>,
    out: &mut Vec<u8>,
) -> std::ops::Range<usize> {
    let fields = Fields {
        hostname: None,
        app_name: app_name.as_bytes(),
        procid: b"-",
        msg: msg.as_bytes(),
    };
    render::write_line(pri, &fields, ctx, out)
}

/// Sanitise, parse (RFC 5424 then RFC 3164) and render one framed raw message. Appends to
/// `out` the wire bytes `LEN SP <PRI>1 TS HOST APP PROCID LOG [SEKOIA@53288 intake_key="KEY"] MSG\n`
/// (LEN counts the line including its `\n`) and returns the range in `out` of the line
/// without the `LEN SP` prefix (used for debug output). `scratch` is a reusable buffer (no
/// allocation per event once warm).
pub fn render_event(
    raw: &[u8],
    ctx: &EventContext<'_>,
    scratch: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> std::ops::Range<usize> {
    let clean = sanitise::sanitise(raw, scratch);
    let (pri, fields) = match pri::parse_pri(clean) {
        pri::Pri::Valid { value, body } => {
            let header = &clean[body..];
            (
                value,
                rfc5424::parse(header).unwrap_or_else(|| rfc3164::parse(header)),
            )
        }
        pri::Pri::Invalid => (
            pri::DEFAULT_PRI,
            Fields {
                hostname: None,
                app_name: b"-",
                procid: b"-",
                msg: clean,
            },
        ),
    };
    render::write_line(pri, &fields, ctx, out)
}
