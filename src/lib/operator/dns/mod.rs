//! `mailroom dns [DOMAIN]`: are the DNS records right for mail from this host? Checks,
//! for DOMAIN (default `$mydomain`) and this host (`$myhostname`):
//!
//! - `a`: myhostname has an A or AAAA record;
//! - `mx`: DOMAIN has MX records, each naming a host with an address;
//! - `ptr`: each public address of this host has a PTR record naming myhostname, which
//!   resolves back to it (forward-confirmed reverse DNS);
//! - `spf`: DOMAIN has an SPF record that passes this host's addresses;
//! - `dkim`: `dkim_selector._domainkey.DOMAIN` publishes our key;
//! - `dmarc`: `_dmarc.DOMAIN` has one DMARC record that parses.
//!
//! One line per check (or `--json`), exit 0 when all are ok, 1 when not, 75 when no
//! name server answered at all. Jobs: [`host`] (what the records must match),
//! [`checks`] (the queries and verdicts), [`report`] (the printed forms).

pub mod checks;
pub mod host;
pub mod report;

use std::io::Write;
use std::time::Duration;

use crate::config::Config;
use crate::dns::{Lookup, servers};
use crate::sysexits::{Error, Result};

use super::write_out;

/// The wait for each attempt of each query (two attempts): long enough for a distant
/// server, short enough that an unreachable one is reported in seconds.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(3);

/// What `mailroom dns` was asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// Default: `$mydomain`.
    pub domain: Option<String>,
    /// `--server ADDRESS[:PORT]`: instead of `dns_nameservers` for this run.
    pub server: Option<String>,
    pub json: bool,
}

/// Runs the checks and prints them; returns the exit status (0 all ok, 1 not). No answer
/// from any name server is an error of code 75.
pub fn run(config: &Config, options: &Options, out: &mut dyn Write) -> Result<u8> {
    let servers = match &options.server {
        Some(text) => {
            vec![servers::parse_one(text).map_err(|why| Error::usage(format!("--server {why}")))?]
        }
        None => servers::from_config(config)?,
    };
    let host = host::Host::from_config(config, options.domain.as_deref())?;
    let lookup = Lookup::new(&servers, QUERY_TIMEOUT).map_err(Error::temp)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("start the resolver", &e))?;
    let checks = runtime.block_on(checks::all(&lookup, &host));
    let (answered, failed) = lookup.counts();
    if answered == 0 && failed > 0 {
        let asked = if servers.is_empty() {
            "the name servers of /etc/resolv.conf".to_string()
        } else {
            servers
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(Error::temp(format!(
            "cannot reach DNS: {failed} queries to {asked} got no answer"
        )));
    }
    let text = if options.json {
        report::json(&checks)
    } else {
        report::text(&checks)
    };
    write_out(out, text.as_bytes())?;
    Ok(u8::from(
        checks.iter().any(|c| c.status != report::Status::Ok),
    ))
}
