//! DNS as mailroom uses it, against a DNS server of the test's own (Python's dnslib):
//! `dns_nameservers` sends the SMTP client's MX lookups there, and `mailroom dns` checks a
//! domain's records in it.

mod common;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use common::dns_server::DnsServer;
use common::smtp_server::Aiosmtpd;
use mailroom::config::Config;
use mailroom::deliver::smtp::{SmtpContext, deliver};
use mailroom::deliver::{MessageSource, Status};
use mailroom::log::Log;
use mailroom::queue::{Envelope, QueueId, Recipient};

// ---------------------------------------------------------------------------------------
// dns_nameservers and the SMTP client.

#[test]
fn mx_delivery_asks_the_servers_of_dns_nameservers() {
    // example.test exists only in this zone: the system's resolver would not find it.
    let Some(dns) = DnsServer::start(
        "example.test. 60 IN MX 10 mx1.example.test.\n\
         mx1.example.test. 60 IN A 127.0.0.1\n",
    ) else {
        return;
    };
    let Some(server) = Aiosmtpd::start() else {
        return;
    };
    // host:port without brackets: an MX lookup, then that port on each MX host.
    let text = format!(
        "myhostname = me.example\nrelayhost = example.test:{}\n{}",
        server.port,
        dns.main_cf_line()
    );
    let config = Config::from_text(&text, Path::new("/nonexistent/main.cf"));
    let ctx = SmtpContext::from_config(&config)
        .expect("config")
        .with_log(Arc::new(Log::discard()));
    let body = b"From: a@me.example\nSubject: mx\n\nhello\n";
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(body).unwrap();
    let mut envelope = Envelope::new(QueueId::generate(), 0, 0, "a@me.example");
    envelope.size = body.len() as u64;
    let rcpt = Recipient::new("b@example.test", "b@example.test");
    let outcomes = deliver(
        &ctx,
        &envelope,
        MessageSource::for_envelope(&file, &envelope),
        &[&rcpt],
    );
    assert_eq!(outcomes[0].status, Status::Sent, "{:?}", outcomes[0]);
    assert!(
        outcomes[0].relay.contains("mx1.example.test"),
        "{:?}",
        outcomes[0]
    );
    let (meta, _) = server.received(0);
    assert_eq!(meta["rcpt_tos"][0], "b@example.test");
    let queries = dns.queries();
    assert!(
        queries.contains(&"example.test MX".to_string()),
        "{queries:?}"
    );
    assert!(
        queries.contains(&"mx1.example.test A".to_string()),
        "{queries:?}"
    );
}

#[test]
fn an_invalid_dns_nameservers_is_a_configuration_error() {
    let config = Config::from_text(
        "dns_nameservers = ns.example.com\n",
        Path::new("/nonexistent/main.cf"),
    );
    let err = SmtpContext::from_config(&config).err().expect("an error");
    assert_eq!(err.code() as u8, 78);
    assert!(err.to_string().contains("dns_nameservers"), "{err}");
    assert!(err.to_string().contains("not an IP address"), "{err}");
}
