//! The data of an `rsp` (`CODE SP TEXT [LF offers]`) and the offers exchanged by `open`.
//!
//! The client offers `relp_version=0`, its software and `commands=syslog`. The server's answer
//! to `open` must be 200 and must carry `relp_version=0` and a `commands` offer that lists
//! `syslog`; anything else refuses the session with an error that says what the server sent.

use std::fmt;

/// The only protocol version there is (librelp 1.11 still speaks it).
pub const RELP_VERSION: &str = "0";

/// Our `open` offers: `relp_version=0`, `relp_software=sekoia-forwarder,<version>`,
/// `commands=syslog`, separated by LF.
pub fn client_offer() -> Vec<u8> {
    format!(
        "relp_version={RELP_VERSION}\nrelp_software=sekoia-forwarder,{}\ncommands=syslog",
        env!("CARGO_PKG_VERSION"),
    )
    .into_bytes()
}

/// A parsed `rsp`: `200 OK` has code 200, text `OK`, and `rest` holds what follows the first
/// LF (the offers of an `open` answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub code: u16,
    pub text: String,
    pub rest: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("response {0:?} does not start with a 3-digit code and a space")]
    NoCode(String),
    #[error("the server refused the session: {code} {text}")]
    Refused { code: u16, text: String },
    #[error("the server offers no relp_version (it sent {offers:?})")]
    NoVersion { offers: String },
    #[error("the server speaks RELP version {0}, not version {RELP_VERSION}")]
    Version(String),
    #[error("the server does not offer the syslog command (it offers commands {0:?})")]
    NoSyslog(String),
}

impl Response {
    pub fn parse(data: &[u8]) -> Result<Self, ResponseError> {
        let (first, rest) = match data.iter().position(|b| *b == b'\n') {
            Some(lf) => (&data[..lf], &data[lf + 1..]),
            None => (data, &[][..]),
        };
        let first = String::from_utf8_lossy(first);
        let no_code = || ResponseError::NoCode(first.chars().take(64).collect());
        let (code, text) = first.split_once(' ').ok_or_else(no_code)?;
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(no_code());
        }
        Ok(Self {
            code: code.parse().map_err(|_| no_code())?,
            text: text.to_string(),
            rest: rest.to_vec(),
        })
    }

    pub fn is_ok(&self) -> bool {
        self.code == 200
    }
}

impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.text)
    }
}

/// The offers of the server's answer to `open`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offers {
    pub version: String,
    pub software: Option<String>,
    pub commands: Vec<String>,
}

impl Offers {
    /// Check the answer to `open`: 200, version 0, `syslog` among the commands.
    pub fn from_open_answer(rsp: &Response) -> Result<Self, ResponseError> {
        if !rsp.is_ok() {
            return Err(ResponseError::Refused {
                code: rsp.code,
                text: rsp.text.clone(),
            });
        }
        let text = String::from_utf8_lossy(&rsp.rest);
        let mut version = None;
        let mut software = None;
        let mut commands = None;
        for line in text.split('\n').map(str::trim).filter(|l| !l.is_empty()) {
            let (name, value) = line.split_once('=').unwrap_or((line, ""));
            match name {
                "relp_version" => version = Some(value.to_string()),
                "relp_software" => software = Some(value.to_string()),
                "commands" => commands = Some(value.to_string()),
                _ => {}
            }
        }
        let version = version.ok_or_else(|| ResponseError::NoVersion {
            offers: text.chars().take(200).collect(),
        })?;
        if version != RELP_VERSION {
            return Err(ResponseError::Version(version));
        }
        let commands = commands.unwrap_or_default();
        if !commands.split(',').any(|c| c.trim() == "syslog") {
            return Err(ResponseError::NoSyslog(commands));
        }
        Ok(Self {
            version,
            software,
            commands: commands.split(',').map(|c| c.trim().to_string()).collect(),
        })
    }
}

#[cfg(test)]
mod tests;
