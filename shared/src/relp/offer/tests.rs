use super::*;

const LIBRELP_OPEN_ANSWER: &[u8] =
    b"200 OK\nrelp_version=0\nrelp_software=librelp,1.11.0,http://librelp.adiscon.com\ncommands=syslog\n";

#[test]
fn client_offer_names_version_software_and_syslog() {
    let offer = String::from_utf8(client_offer()).unwrap();
    let lines: Vec<&str> = offer.split('\n').collect();
    assert_eq!(lines[0], "relp_version=0");
    assert!(lines[1].starts_with("relp_software=sekoia-forwarder,"));
    assert_eq!(lines[2], "commands=syslog");
    assert_eq!(lines.len(), 3);
}

#[test]
fn parses_code_text_and_rest() {
    let rsp = Response::parse(b"200 OK").unwrap();
    assert_eq!(
        (rsp.code, rsp.text.as_str(), rsp.is_ok()),
        (200, "OK", true)
    );
    let rsp = Response::parse(b"500 queue full\nmore").unwrap();
    assert_eq!((rsp.code, rsp.text.as_str()), (500, "queue full"));
    assert_eq!(rsp.rest, b"more");
    assert!(!rsp.is_ok());
    assert_eq!(rsp.to_string(), "500 queue full");
}

#[test]
fn a_response_without_a_code_is_an_error() {
    for bad in [&b""[..], b"OK", b"20 OK", b"2000 OK", b"abc OK", b"200"] {
        assert!(
            matches!(Response::parse(bad), Err(ResponseError::NoCode(_))),
            "{}",
            bad.escape_ascii()
        );
    }
}

#[test]
fn librelp_open_answer_is_accepted() {
    let offers = Offers::from_open_answer(&Response::parse(LIBRELP_OPEN_ANSWER).unwrap()).unwrap();
    assert_eq!(offers.version, "0");
    assert_eq!(offers.commands, ["syslog"]);
    assert_eq!(
        offers.software.as_deref(),
        Some("librelp,1.11.0,http://librelp.adiscon.com")
    );
}

fn check(answer: &[u8]) -> Result<Offers, ResponseError> {
    Offers::from_open_answer(&Response::parse(answer).unwrap())
}

#[test]
fn a_server_without_syslog_is_refused_at_open() {
    assert_eq!(
        check(b"200 OK\nrelp_version=0\ncommands=foo,bar\n"),
        Err(ResponseError::NoSyslog("foo,bar".into()))
    );
    assert_eq!(
        check(b"200 OK\nrelp_version=0\n"),
        Err(ResponseError::NoSyslog(String::new()))
    );
    let err = check(b"200 OK\nrelp_version=0\ncommands=foo\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "the server does not offer the syslog command (it offers commands \"foo\")"
    );
}

#[test]
fn syslog_among_several_commands_is_enough() {
    let offers = check(b"200 OK\nrelp_version=0\ncommands=foo,syslog\n").unwrap();
    assert_eq!(offers.commands, ["foo", "syslog"]);
}

#[test]
fn another_or_missing_version_is_refused() {
    assert_eq!(
        check(b"200 OK\nrelp_version=1\ncommands=syslog\n"),
        Err(ResponseError::Version("1".into()))
    );
    assert!(matches!(
        check(b"200 OK\ncommands=syslog\n"),
        Err(ResponseError::NoVersion { .. })
    ));
}

#[test]
fn a_refused_open_carries_the_servers_words() {
    assert_eq!(
        check(b"500 too many sessions"),
        Err(ResponseError::Refused {
            code: 500,
            text: "too many sessions".into()
        })
    );
}
