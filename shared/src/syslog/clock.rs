//! Reception timestamps in the local time zone, as rsyslog's `date-rfc3339` prints
//! `timegenerated`: `YYYY-MM-DDTHH:MM:SS.ffffff+HH:MM` — always 6 fractional digits and
//! always a numeric offset (`+00:00`, never `Z`).
//!
//! The local zone is chrono's `Local` (honours `TZ`, else `/etc/localtime`). Cost per call:
//! same second as the previous call → only the 6 fractional digits are rewritten; new
//! second → the date and time are re-formatted with the cached UTC offset; new minute → the
//! offset is asked again from the time-zone rules (zone transitions fall on whole minutes).
//! Nothing is allocated after `new`. The offset is printed truncated to whole minutes with
//! its sign, as rsyslog does from `tm_gmtoff`.

use chrono::{DateTime, Datelike, Local, Offset, TimeZone, Timelike};

const TEMPLATE: &[u8; 32] = b"0000-00-00T00:00:00.000000+00:00";
const FRACTION: usize = 20;

/// Formats reception times; one per thread (it caches the last second it formatted).
#[derive(Debug, Clone)]
pub struct LocalClock {
    buf: [u8; 32],
    /// Unix second currently in `buf`.
    second: Option<i64>,
    /// Unix minute for which `offset` was looked up.
    offset_minute: Option<i64>,
    /// Local time minus UTC, in seconds.
    offset: i32,
}

impl Default for LocalClock {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalClock {
    pub fn new() -> Self {
        LocalClock {
            buf: *TEMPLATE,
            second: None,
            offset_minute: None,
            offset: 0,
        }
    }

    /// The local-time RFC 3339 text of `unix_micros`, e.g. `2024-05-01T10:00:00.123456+02:00`.
    pub fn format(&mut self, unix_micros: i64) -> &str {
        let second = unix_micros.div_euclid(1_000_000);
        let micros = unix_micros.rem_euclid(1_000_000);
        if self.second != Some(second) {
            self.format_second(second);
        }
        write_digits(&mut self.buf[FRACTION..FRACTION + 6], micros);
        std::str::from_utf8(&self.buf).unwrap_or("1970-01-01T00:00:00.000000+00:00")
    }

    fn format_second(&mut self, second: i64) {
        let utc = DateTime::from_timestamp(second, 0).unwrap_or_default();
        let minute = second.div_euclid(60);
        if self.offset_minute != Some(minute) {
            self.offset = Local
                .offset_from_utc_datetime(&utc.naive_utc())
                .fix()
                .local_minus_utc();
            self.offset_minute = Some(minute);
        }
        let local = utc
            .naive_utc()
            .checked_add_signed(chrono::Duration::seconds(i64::from(self.offset)))
            .unwrap_or(utc.naive_utc());
        let b = &mut self.buf;
        write_digits(&mut b[0..4], i64::from(local.year()).rem_euclid(10_000));
        write_digits(&mut b[5..7], i64::from(local.month()));
        write_digits(&mut b[8..10], i64::from(local.day()));
        write_digits(&mut b[11..13], i64::from(local.hour()));
        write_digits(&mut b[14..16], i64::from(local.minute()));
        write_digits(&mut b[17..19], i64::from(local.second()));
        b[26] = if self.offset < 0 { b'-' } else { b'+' };
        let abs = i64::from(self.offset.unsigned_abs());
        write_digits(&mut b[27..29], abs / 3600);
        write_digits(&mut b[30..32], (abs % 3600) / 60);
        self.second = Some(second);
    }
}

/// Writes `v` as exactly `dst.len()` decimal digits (zero-padded, high digits dropped).
fn write_digits(dst: &mut [u8], mut v: i64) {
    for d in dst.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_six_fraction_digits_and_numeric_offset() {
        let mut c = LocalClock::new();
        let s = c.format(1_714_557_600_123_456).to_owned();
        assert_eq!(s.len(), 32);
        assert_eq!(&s[19..26], ".123456");
        assert!(s.as_bytes()[26] == b'+' || s.as_bytes()[26] == b'-');
        assert!(!s.contains('Z'));
    }

    #[test]
    fn matches_chrono_local_for_many_instants() {
        let mut c = LocalClock::new();
        let mut t: i64 = 946_684_800_000_000; // 2000-01-01
        for step in 0..2000i64 {
            t += 3_600_000_000 * 7 + step * 1_234_567;
            let expected = Local
                .timestamp_micros(t)
                .single()
                .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.6f%:z").to_string());
            assert_eq!(Some(c.format(t).to_owned()), expected);
        }
    }

    #[test]
    fn second_by_second_across_a_dst_change_matches_chrono() {
        // 2024-03-31T00:58:00Z .. 01:02:00Z: Europe's spring change (run with TZ=Europe/Paris).
        let mut c = LocalClock::new();
        for s in 1_711_846_680..1_711_846_920i64 {
            let t = s * 1_000_000 + 500_000;
            let expected = Local
                .timestamp_micros(t)
                .single()
                .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.6f%:z").to_string());
            assert_eq!(Some(c.format(t).to_owned()), expected);
        }
    }

    #[test]
    fn same_second_only_changes_fraction() {
        let mut c = LocalClock::new();
        let a = c.format(1_000_000_000_000_001).to_owned();
        let b = c.format(1_000_000_000_999_999).to_owned();
        assert_eq!(a[..20], b[..20]);
        assert_eq!(&b[20..26], "999999");
    }

    #[test]
    fn negative_times_do_not_panic() {
        let mut c = LocalClock::new();
        assert_eq!(c.format(-1).len(), 32);
        assert_eq!(c.format(i64::MIN).len(), 32);
        assert_eq!(c.format(i64::MAX).len(), 32);
    }
}
