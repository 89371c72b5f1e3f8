//! Every frame and error case of the PROXY header parser, the reader's "exactly the header"
//! and time rules, and the listener behind a balancer on 127.0.0.1:0 (TCP and TLS).

use super::*;
use std::net::SocketAddr;

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn client(text: &str) -> Progress {
    Progress::Done(Proxied::Client(addr(text)))
}

/// A v2 header: `ver_cmd`, `fam`, then `block` (addresses and TLVs) with its length.
fn v2(ver_cmd: u8, fam: u8, block: &[u8]) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.extend_from_slice(&[ver_cmd, fam]);
    h.extend_from_slice(&u16::try_from(block.len()).unwrap().to_be_bytes());
    h.extend_from_slice(block);
    h
}

fn v2_ipv4_block() -> Vec<u8> {
    let mut b = vec![192, 0, 2, 10, 10, 0, 0, 1];
    b.extend_from_slice(&51234u16.to_be_bytes());
    b.extend_from_slice(&20516u16.to_be_bytes());
    b
}

fn v2_ipv6_block() -> Vec<u8> {
    let src: std::net::Ipv6Addr = "2001:db8::7".parse().unwrap();
    let dst: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
    let mut b = src.octets().to_vec();
    b.extend_from_slice(&dst.octets());
    b.extend_from_slice(&600u16.to_be_bytes());
    b.extend_from_slice(&514u16.to_be_bytes());
    b
}

#[test]
fn v1_tcp4_and_tcp6_lines_name_the_client() {
    let line = b"PROXY TCP4 192.0.2.10 10.0.0.1 51234 20516\r\n";
    assert_eq!(parse(line), client("192.0.2.10:51234"));
    let line = b"PROXY TCP6 2001:db8::7 2001:db8::1 600 514\r\n";
    assert_eq!(parse(line), client("[2001:db8::7]:600"));
    let widest = b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    assert_eq!(widest.len(), 104);
    assert!(matches!(parse(widest), Progress::Done(Proxied::Client(_))));
    assert_eq!(
        parse(b"PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n"),
        client("0.0.0.0:0")
    );
}

#[test]
fn v1_unknown_keeps_the_connections_own_address_whatever_follows() {
    assert_eq!(parse(b"PROXY UNKNOWN\r\n"), Progress::Done(Proxied::Own));
    let long = b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    assert_eq!(long.len(), V1_MAX);
    assert_eq!(parse(long), Progress::Done(Proxied::Own));
}

#[test]
fn v1_is_read_in_steps_that_never_pass_its_crlf() {
    assert_eq!(parse(b""), Progress::Need(15));
    assert_eq!(parse(b"P"), Progress::Need(14));
    // The fields still to come at their shortest: "3.4 5.6.7.8 1 2\r\n" is 17 bytes.
    assert_eq!(parse(b"PROXY TCP4 1.2."), Progress::Need(17));
    assert_eq!(parse(b"PROXY TCP6 2001"), Progress::Need(3 + 2 + 2 + 2));
    assert_eq!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2"), Progress::Need(2));
    assert_eq!(
        parse(b"PROXY UNKNOWN 1"),
        Progress::Need(2),
        "UNKNOWN may end now"
    );
    assert_eq!(parse(b"PROXY TCP5 1.2."), Progress::Need(2));
    assert_eq!(
        parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r"),
        Progress::Need(1)
    );
    let mut line = b"PROXY UNKNOWN ".to_vec();
    line.resize(V1_MAX - 1, b'x');
    assert_eq!(parse(&line), Progress::Need(1), "one byte left of the 107");
}

#[test]
fn v1_without_crlf_in_107_bytes_is_too_long() {
    let mut line = b"PROXY UNKNOWN ".to_vec();
    line.resize(V1_MAX, b'x');
    assert_eq!(parse(&line), Progress::Invalid(Malformed::V1TooLong));
    line[V1_MAX - 1] = b'\r';
    assert_eq!(
        parse(&line),
        Progress::Invalid(Malformed::V1TooLong),
        "its LF would be the 108th byte"
    );
}

#[test]
fn v1_lone_cr_or_lf_is_refused() {
    let lf = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n";
    assert_eq!(parse(lf), Progress::Invalid(Malformed::V1BadEnd));
    let cr = b"PROXY TCP4 1.2.3.4\r5.6.7.8 1 2";
    assert_eq!(parse(cr), Progress::Invalid(Malformed::V1BadEnd));
}

#[test]
fn v1_fields_that_do_not_match_exactly_are_refused() {
    let bad: [&[u8]; 12] = [
        b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
        b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
        b"PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n",
        b"PROXY TCP6 1.2.3.4 2001:db8::1 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
        b"PROXY TCP4 1.2.3.4\r\n",
        b"PROXY TCP4 1.2.3.\xff 5.6.7.8 1 2\r\n",
    ];
    for line in bad {
        assert!(
            matches!(parse(line), Progress::Invalid(Malformed::V1Field(_))),
            "{:?} gave {:?}",
            String::from_utf8_lossy(line),
            parse(line)
        );
    }
}

#[test]
fn a_stream_that_starts_neither_signature_is_missing_its_header_at_once() {
    for start in [
        &b"<13>hello"[..],
        b"PROXZ",
        b"proxy ",
        b"\x16\x03\x01",
        b"\r\n\r\n\0\r\nQUIX",
    ] {
        match parse(start) {
            Progress::Invalid(Malformed::Missing(shown)) => assert_eq!(shown, start),
            other => panic!("{start:?} gave {other:?}"),
        }
    }
    let text = Malformed::Missing(b"<13>hi".to_vec()).to_string();
    assert!(
        text.starts_with("no PROXY protocol header: the connection starts with \"<13>hi\""),
        "{text}"
    );
}

#[test]
fn v2_ipv4_and_ipv6_name_the_client_and_tlvs_are_skipped() {
    assert_eq!(
        parse(&v2(0x21, 0x11, &v2_ipv4_block())),
        client("192.0.2.10:51234")
    );
    assert_eq!(
        parse(&v2(0x21, 0x21, &v2_ipv6_block())),
        client("[2001:db8::7]:600")
    );
    let mut with_tlvs = v2_ipv4_block();
    with_tlvs.extend_from_slice(&[0x05, 0x00, 0x03, b'a', b'b', b'c', 0x04, 0x00, 0x00]);
    assert_eq!(
        parse(&v2(0x21, 0x11, &with_tlvs)),
        client("192.0.2.10:51234")
    );
    assert_eq!(
        parse(&v2(0x21, 0x12, &v2_ipv4_block())),
        client("192.0.2.10:51234"),
        "UDP over IPv4 names its client too"
    );
}

#[test]
fn v2_local_unspec_and_unix_keep_the_connections_own_address() {
    assert_eq!(parse(&v2(0x20, 0x00, &[])), Progress::Done(Proxied::Own));
    assert_eq!(
        parse(&v2(0x20, 0x11, &v2_ipv4_block())),
        Progress::Done(Proxied::Own),
        "LOCAL ignores addresses it carries"
    );
    assert_eq!(parse(&v2(0x21, 0x00, &[])), Progress::Done(Proxied::Own));
    assert_eq!(
        parse(&v2(0x21, 0x31, &[0; 216])),
        Progress::Done(Proxied::Own)
    );
}

#[test]
fn v2_is_read_as_its_fixed_part_then_its_announced_length() {
    let header = v2(0x21, 0x11, &v2_ipv4_block());
    assert_eq!(parse(&header[..1]), Progress::Need(15));
    assert_eq!(parse(&header[..12]), Progress::Need(4));
    assert_eq!(parse(&header[..16]), Progress::Need(12));
    assert_eq!(parse(&header[..20]), Progress::Need(8));
}

#[test]
fn v2_bad_version_command_family_length_are_refused() {
    let block = v2_ipv4_block();
    assert_eq!(
        parse(&v2(0x11, 0x11, &block)),
        Progress::Invalid(Malformed::V2Version(1))
    );
    assert_eq!(
        parse(&v2(0x22, 0x11, &block)),
        Progress::Invalid(Malformed::V2Command(2))
    );
    for fam in [0x13, 0x10, 0x41, 0x01] {
        assert_eq!(
            parse(&v2(0x21, fam, &block)),
            Progress::Invalid(Malformed::V2Family(fam))
        );
    }
    let mut long = V2_SIGNATURE.to_vec();
    long.extend_from_slice(&[0x21, 0x11]);
    long.extend_from_slice(&u16::try_from(V2_MAX_BLOCK + 1).unwrap().to_be_bytes());
    assert_eq!(
        parse(&long),
        Progress::Invalid(Malformed::V2TooLong(V2_MAX_BLOCK + 1))
    );
    assert_eq!(
        parse(&v2(0x21, 0x11, &block[..8])),
        Progress::Invalid(Malformed::V2ShortAddresses {
            family: "IPv4",
            len: 8
        })
    );
    assert_eq!(
        parse(&v2(0x21, 0x21, &block)),
        Progress::Invalid(Malformed::V2ShortAddresses {
            family: "IPv6",
            len: 12
        })
    );
}

mod reading;

/// A stream that hands out at most `chunk` bytes per read.
struct Chunked<'a> {
    bytes: &'a [u8],
    chunk: usize,
    reads: usize,
}

impl tokio::io::AsyncRead for Chunked<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.reads += 1;
        let n = self.chunk.min(buf.remaining()).min(self.bytes.len());
        buf.put_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn however_the_stream_is_cut_the_header_is_read_exactly() {
    let mut tlv = v2_ipv4_block();
    tlv.extend_from_slice(&[0x02, 0x00, 0x04, b'h', b'o', b's', b't']);
    let headers: Vec<Vec<u8>> = vec![
        b"PROXY TCP4 192.0.2.10 10.0.0.1 51234 20516\r\n".to_vec(),
        b"PROXY TCP6 2001:db8::7 2001:db8::1 600 514\r\n".to_vec(),
        b"PROXY UNKNOWN\r\n".to_vec(),
        v2(0x21, 0x11, &tlv),
        v2(0x21, 0x21, &v2_ipv6_block()),
        v2(0x20, 0x00, &[]),
    ];
    let payload = b"\r\n<13>PROXY TCP4 1.1.1.1 2.2.2.2 1 2\r\n";
    for header in &headers {
        let whole = parse(header);
        let mut stream = header.clone();
        stream.extend_from_slice(payload);
        for chunk in 1..=stream.len() {
            let mut reader = Chunked {
                bytes: &stream,
                chunk,
                reads: 0,
            };
            let outcome = read_header(&mut reader, None, Duration::from_secs(5)).await;
            match (&outcome, &whole) {
                (Outcome::Header(got), Progress::Done(want)) => assert_eq!(got, want),
                _ => panic!("chunk {chunk}: {outcome:?}"),
            }
            assert_eq!(reader.bytes, payload, "chunk {chunk} of {header:?}");
        }
    }
}

#[test]
fn arbitrary_bytes_never_panic_and_never_ask_past_the_bounds() {
    // xorshift: deterministic, no dependency. Inputs start with a piece of a signature
    // half of the time, so the parser gets past its first byte.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..200_000 {
        let len = (next() % 160) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        match next() % 4 {
            0 => bytes.splice(0..0, b"PROXY ".iter().copied()).for_each(drop),
            1 => bytes
                .splice(0..0, V2_SIGNATURE.iter().copied())
                .for_each(drop),
            _ => {}
        }
        if let Progress::Need(n) = parse(&bytes) {
            assert!(n > 0);
            assert!(bytes.len() + n <= 16 + V2_MAX_BLOCK, "{bytes:?} asks {n}");
            if bytes.first() == Some(&b'P') {
                assert!(bytes.len() + n <= V1_MAX, "{bytes:?} asks {n}");
            }
        }
    }
}

#[tokio::test]
async fn a_v2_header_takes_three_reads_and_a_typical_v1_line_six() {
    let v1 = b"PROXY TCP4 127.0.0.2 127.0.0.1 45678 20516\r\n";
    let v2 = v2(0x21, 0x11, &v2_ipv4_block());
    for (header, reads) in [(&v1[..], 6), (&v2, 3)] {
        let mut stream = header.to_vec();
        stream.extend_from_slice(b"<13>after\n");
        let mut reader = Chunked {
            bytes: &stream,
            chunk: usize::MAX,
            reads: 0,
        };
        let outcome = read_header(&mut reader, None, Duration::from_secs(5)).await;
        assert!(
            matches!(outcome, Outcome::Header(Proxied::Client(_))),
            "{outcome:?}"
        );
        assert_eq!(reader.reads, reads, "{:?}", String::from_utf8_lossy(header));
    }
}

/// No prefix of a valid header asks for more bytes than the header still has, and the
/// whole header parses: checked on the tightest lines and on 5,000 random valid ones.
#[test]
fn no_prefix_of_a_valid_header_asks_past_its_end() {
    let check = |header: &[u8]| {
        for k in 0..header.len() {
            match parse(&header[..k]) {
                Progress::Need(n) => assert!(k + n <= header.len(), "{header:?} at {k}: {n}"),
                other => panic!("{:?} at {k}: {other:?}", String::from_utf8_lossy(header)),
            }
        }
        assert!(matches!(parse(header), Progress::Done(_)), "{header:?}");
    };
    let tight: [&[u8]; 4] = [
        b"PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n",
        b"PROXY TCP6 :: :: 0 0\r\n",
        b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
        b"PROXY UNKNOWN\r\n",
    ];
    tight.iter().for_each(|h| check(h));
    check(&v2(0x21, 0x21, &v2_ipv6_block()));
    check(&v2(0x20, 0x00, &[]));
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..5_000 {
        // Mostly small numbers, so short forms (`0.0.0.7`, `::1`, port 5) come up often.
        let mut part = || if next() % 2 == 0 { next() % 10 } else { next() };
        let line = if part() % 2 == 0 {
            let ip = |n: u64| std::net::Ipv4Addr::from(n as u32);
            format!(
                "PROXY TCP4 {} {} {} {}\r\n",
                ip(part()),
                ip(part()),
                part() as u16,
                part() as u16
            )
        } else {
            let ip =
                |a: u64, b: u64| std::net::Ipv6Addr::from((u128::from(a) << 64) | u128::from(b));
            let (s1, s2, d1, d2) = (part(), part(), part(), part());
            format!(
                "PROXY TCP6 {} {} {} {}\r\n",
                ip(s1, s2),
                ip(d1, d2),
                part() as u16,
                part() as u16
            )
        };
        check(line.as_bytes());
    }
}
