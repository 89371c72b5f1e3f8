//! Where an entry's events go: the optional `region` and `endpoint` fields.
//!
//! Without either, the global `REGION`/`ENDPOINT` apply, so a reference `intakes.yaml` means
//! what it always meant. `region: USA1` sends to that region's intake host; `endpoint:
//! HOST[:PORT]` sends there and implies `OTHER` (writing `region: OTHER` beside it is
//! allowed, any other region beside it is a problem). Two spellings of one place (`FRA1` and
//! `endpoint: intake.sekoia.io`, or a host in capitals) are one destination: see
//! [`Destination::same_place`](crate::config::Destination::same_place). The output (TLS or
//! RELP, `RELP_OUTPUT`) is the global one, with the RELP target rules applied to the
//! entry's own region or endpoint.

use std::collections::HashMap;

use serde_yaml_ng::Value;

use crate::config::entry::Report;
use crate::config::limits::At;
use crate::config::region::{Destination, Region};
use crate::config::yaml11::text;

/// The fields read here, for the unknown-field check.
pub(crate) const FIELDS: [&str; 2] = ["region", "endpoint"];

/// The entry's destination; `default` when it names none. A bad value is reported (and
/// `default` returned, the configuration being rejected anyway).
pub(crate) fn read(
    fields: &HashMap<&str, &Value>,
    default: &Destination,
    at: &At<'_>,
    report: &mut Report<'_>,
) -> Destination {
    let region = fields.get("region").map(|v| text(v, false));
    let endpoint = fields.get("endpoint").map(|v| text(v, false));
    let region = match region {
        None => None,
        Some(Ok(name)) => match Region::parse(&name) {
            Ok(region) => Some(region),
            Err(e) => {
                let fix = format!(
                    "use one of {}, or `endpoint: HOST[:PORT]` for another destination",
                    Region::known_names()
                );
                report.problem(at.file, at.label, "region", e.to_string(), &fix);
                return default.clone();
            }
        },
        Some(Err(what)) => {
            report.problem(
                at.file,
                at.label,
                "region",
                what,
                "write the region as text",
            );
            return default.clone();
        }
    };
    match (region, endpoint) {
        (None, None) => default.clone(),
        (Some(Region::Other), None) => {
            let what = "region OTHER needs an endpoint".to_string();
            let fix = "add `endpoint: HOST[:PORT]` to the entry";
            report.problem(at.file, at.label, "region", what, fix);
            default.clone()
        }
        (Some(region), None) => region
            .destination(None, default.output)
            .unwrap_or_else(|_| default.clone()),
        (Some(region), Some(_)) if region != Region::Other => {
            let what = format!("region {region} and an endpoint are both given");
            let fix = "keep `endpoint` alone (it implies OTHER), or remove it to use the region";
            report.problem(at.file, at.label, "endpoint", what, fix);
            default.clone()
        }
        (_, Some(Err(what))) => {
            let fix = "write the endpoint as text: HOST[:PORT]";
            report.problem(at.file, at.label, "endpoint", what, fix);
            default.clone()
        }
        (_, Some(Ok(endpoint))) => match Region::Other.destination(Some(&endpoint), default.output)
        {
            Ok(destination) => destination,
            Err(e) => {
                let fix = "write HOST[:PORT], e.g. intake.sekoia.io or [2001:db8::1]:10514";
                report.problem(at.file, at.label, "endpoint", e.to_string(), fix);
                default.clone()
            }
        },
    }
}
