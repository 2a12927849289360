//! A DNS server for the tests (Python's dnslib, `tests/support/dns_zone_server.py`):
//! serves a zone given as zone-file text on a free UDP and TCP port of 127.0.0.1, and
//! records the questions it was asked. main.cf points at it with
//! `dns_nameservers = 127.0.0.1:PORT`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use super::require_python_package;

const SCRIPT: &str = include_str!("../support/dns_zone_server.py");

pub struct DnsServer {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl DnsServer {
    /// Serves `zone` (BIND syntax, absolute names). None (the test returns, after the
    /// `skipped: dnslib not installed` line) when dnslib is missing.
    pub fn start(zone: &str) -> Option<DnsServer> {
        DnsServer::start_failing(zone, &[])
    }

    /// As [`DnsServer::start`], answering every question about the names of `failing`
    /// (absolute, without the final dot) with SERVFAIL.
    pub fn start_failing(zone: &str, failing: &[&str]) -> Option<DnsServer> {
        if !require_python_package("dnslib", "dnslib") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let zone_file = dir.path().join("zone");
        std::fs::write(&zone_file, zone).unwrap();
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(SCRIPT)
            .arg(&zone_file)
            .arg(dir.path().join("queries"))
            .args(failing)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        let stdout = child.stdout.take().unwrap();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let port = line.trim().parse().expect("the DNS server prints its port");
        Some(DnsServer { child, port, dir })
    }

    /// `dns_nameservers = 127.0.0.1:PORT`, for main.cf.
    pub fn main_cf_line(&self) -> String {
        format!("dns_nameservers = 127.0.0.1:{}\n", self.port)
    }

    /// The questions asked so far, as `name TYPE` (lower case, no final dot).
    pub fn queries(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("queries"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
