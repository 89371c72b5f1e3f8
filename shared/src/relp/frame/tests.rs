use super::*;

fn encoded(txnr: u32, command: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode(&mut out, txnr, command, data);
    out
}

fn parse_all(bytes: &[u8]) -> Result<Vec<Frame>, FrameError> {
    let mut reader = FrameReader::new();
    reader.feed(bytes);
    let mut frames = Vec::new();
    while let Some(frame) = reader.next_frame()? {
        frames.push(frame);
    }
    Ok(frames)
}

fn frame(txnr: u32, command: &str, data: &[u8]) -> Frame {
    Frame {
        txnr,
        command: command.to_string(),
        data: data.to_vec(),
    }
}

#[test]
fn encodes_a_syslog_command_with_its_data_and_trailer() {
    assert_eq!(
        encoded(2, "syslog", b"<13>1 x\n"),
        b"2 syslog 8 <13>1 x\n\n".to_vec()
    );
}

#[test]
fn encodes_a_command_without_data_without_the_space() {
    assert_eq!(encoded(7, "close", b""), b"7 close 0\n".to_vec());
}

#[test]
fn parses_an_rsp_and_a_serverclose_as_librelp_sends_them() {
    let frames = parse_all(b"2 rsp 6 200 OK\n0 serverclose 0\n").unwrap();
    assert_eq!(
        frames,
        [frame(2, "rsp", b"200 OK"), frame(0, "serverclose", b"")]
    );
}

#[test]
fn data_may_hold_spaces_and_line_feeds() {
    let data = b"200 OK\nrelp_version=0\ncommands=syslog\n";
    let bytes = encoded(1, "rsp", data);
    assert_eq!(parse_all(&bytes).unwrap(), [frame(1, "rsp", data)]);
}

#[test]
fn a_frame_split_anywhere_is_incomplete_until_its_last_byte() {
    let bytes = b"12 rsp 6 200 OK\n";
    for cut in 0..bytes.len() {
        let mut reader = FrameReader::new();
        reader.feed(&bytes[..cut]);
        assert_eq!(reader.next_frame(), Ok(None), "cut at {cut}");
        reader.feed(&bytes[cut..]);
        assert_eq!(reader.next_frame(), Ok(Some(frame(12, "rsp", b"200 OK"))));
        assert_eq!(reader.buffered(), 0);
    }
}

#[test]
fn announced_data_beyond_the_limit_is_refused_before_it_arrives() {
    let mut reader = FrameReader::new();
    reader.feed(b"3 rsp 999999999 ");
    assert_eq!(
        reader.next_frame(),
        Err(FrameError::TooLarge { len: 999_999_999 })
    );
    let at_limit = format!("3 rsp {MAX_PEER_DATA} ");
    let mut reader = FrameReader::new();
    reader.feed(at_limit.as_bytes());
    assert_eq!(
        reader.next_frame(),
        Ok(None),
        "exactly the limit is allowed"
    );
}

#[test]
fn a_missing_trailer_is_an_error() {
    assert_eq!(
        parse_all(b"2 rsp 6 200 OKX"),
        Err(FrameError::MissingTrailer {
            len: 6,
            found: b'X'
        })
    );
}

#[test]
fn malformed_headers_are_errors_naming_the_field() {
    let cases: [(&[u8], &str); 11] = [
        (b" rsp 6 200 OK\n", "TXNR"),
        (b"x rsp 6 200 OK\n", "TXNR"),
        (b"1234567890 rsp 6 200 OK\n", "TXNR"),
        (b"2  6 200 OK\n", "COMMAND"),
        (b"2 rs1 6 200 OK\n", "COMMAND"),
        (b"2 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa 0\n", "COMMAND"),
        (b"2 rsp  200 OK\n", "DATALEN"),
        (b"2 rsp 6x 200 OK\n", "DATALEN"),
        (b"2 rsp 1234567890 x\n", "DATALEN"),
        (b"2 rsp 6\n", "DATALEN"),
        (b"2 rsp\n", "COMMAND"),
    ];
    for (bytes, field) in cases {
        match parse_all(bytes) {
            Err(FrameError::Malformed { field: f, .. }) => {
                assert_eq!(f, field, "{}", bytes.escape_ascii())
            }
            other => panic!("{}: {other:?}", bytes.escape_ascii()),
        }
    }
}

#[test]
fn the_error_shows_the_start_of_the_frame_escaped() {
    let err = parse_all(b"HTTP/1.1 400 Bad Request\r\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "malformed frame: TXNR has a byte it may not hold (frame starts \"HTTP/1.1 400 Bad Request\\r\\n\")"
    );
}

#[test]
fn encoded_frames_parse_back() {
    for (txnr, command, data) in [
        (1, "open", b"relp_version=0".as_slice()),
        (999_999_999, "syslog", b"x y z\n".as_slice()),
        (5, "close", b"".as_slice()),
    ] {
        let bytes = encoded(txnr, command, data);
        assert_eq!(parse_all(&bytes).unwrap(), [frame(txnr, command, data)]);
    }
}
