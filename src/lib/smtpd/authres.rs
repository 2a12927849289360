//! The `Authentication-Results:` header (RFC 8601) of mail received over SMTP from
//! outside `mynetworks`: SPF of the client's address for the envelope sender (or the
//! HELO name, for the null sender), the message's DKIM signatures, and DMARC of the
//! `From:` domain, all evaluated by mail-auth against DNS (`dns_nameservers`).
//!
//! It runs in the SMTP sessions process (`mail_owner`), after the final dot and before
//! the message is queued: DKIM needs the whole message, so it is held in memory first
//! (at most `message_size_limit`). DNS is given [`TIME_LIMIT`] per message in all; past
//! that, or with no resolver at all, every method is `temperror` and the message is
//! queued as always: an authentication result is never a reason to lose mail.

use std::net::IpAddr;
use std::time::Duration;

use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::hickory_resolver::config::{ResolverConfig, ResolverOpts};
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{AuthenticatedMessage, AuthenticationResults};

use crate::config::Config;
use crate::dns::{Lookup, lookup, servers};
use crate::sysexits::Result;

/// The longest the checks of one message may take, all lookups together.
pub const TIME_LIMIT: Duration = Duration::from_secs(10);

/// The wait for each attempt of each query (two attempts).
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(3);

/// What the header needs, read once when the sessions process starts.
pub struct AuthResults {
    /// The authserv-id: `$myhostname`.
    hostname: String,
    /// The resolver configuration, read before any chroot; why not, when it cannot be.
    resolver: std::result::Result<(ResolverConfig, ResolverOpts), String>,
}

/// The SMTP facts of one message.
pub struct Envelope<'a> {
    pub client: IpAddr,
    pub helo: &'a str,
    /// Empty for the null sender.
    pub sender: &'a str,
}

impl AuthResults {
    /// None when `smtpd_authentication_results = no`. Name servers that cannot be used
    /// (an invalid `dns_nameservers`, which `mailroom check` reports, or a system
    /// configuration that cannot be read) make every result `temperror`: the server that
    /// takes mail must not stop taking it over a resolver setting.
    pub fn from_config(config: &Config) -> Result<Option<AuthResults>> {
        if !config.boolean("smtpd_authentication_results")? {
            return Ok(None);
        }
        let resolver = servers::from_config(config)
            .map_err(|e| e.to_string())
            .and_then(|servers| lookup::resolver_config(&servers, QUERY_TIMEOUT));
        Ok(Some(AuthResults {
            hostname: printable(&config.myhostname()?),
            resolver,
        }))
    }

    /// The authserv-id of our header, `$myhostname`.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// The header field, `Authentication-Results: ...` folded with LF TAB and ending in
    /// LF, for `message` (its text as received, LF line endings).
    pub fn header(&self, message: &[u8], envelope: &Envelope<'_>) -> String {
        let helo = printable(envelope.helo);
        let sender = printable(envelope.sender);
        let envelope = Envelope {
            client: envelope.client.to_canonical(),
            helo: &helo,
            sender: &sender,
        };
        let evaluated = match &self.resolver {
            Ok((config, options)) => self.evaluate(message, &envelope, config, options),
            Err(_) => None,
        };
        let value = evaluated.unwrap_or_else(|| self.temperror(&envelope));
        // mail-auth folds with CRLF TAB; the queue file holds LF line endings.
        format!("Authentication-Results: {}\n", value.replace("\r\n", "\n"))
    }

    /// Every method evaluated; None when they did not finish in [`TIME_LIMIT`].
    fn evaluate(
        &self,
        message: &[u8],
        envelope: &Envelope<'_>,
        config: &ResolverConfig,
        options: &ResolverOpts,
    ) -> Option<String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        runtime.block_on(async {
            // Made inside the runtime it is used in: its connections belong to it.
            let lookup = Lookup::with_config(config.clone(), options.clone());
            tokio::time::timeout(TIME_LIMIT, self.methods(&lookup, message, envelope))
                .await
                .ok()
        })
    }

    async fn methods(&self, lookup: &Lookup, message: &[u8], envelope: &Envelope<'_>) -> String {
        let auth = lookup.authenticator();
        let Envelope {
            client,
            helo,
            sender,
        } = *envelope;
        let host = self.hostname.as_str();
        let spf = if sender.is_empty() {
            auth.verify_spf(SpfParameters::verify_ehlo(client, helo, host))
                .await
        } else {
            auth.verify_spf(SpfParameters::verify_mail_from(client, helo, host, sender))
                .await
        };
        let spf_part = methods_of(
            AuthenticationResults::new(host).with_spf_mailfrom_result(&spf, client, sender, helo),
            host,
        );
        let Some(parsed) = AuthenticatedMessage::parse(message) else {
            // Not a message mail-auth can read (no header at all): nothing to verify.
            return format!("{host}{spf_part};\r\n\tdkim=none;\r\n\tdmarc=none");
        };
        let dkim = auth.verify_dkim(&parsed).await;
        let from_domain = parsed
            .from()
            .rsplit_once('@')
            .map(|(_, d)| d.to_ascii_lowercase())
            .unwrap_or_default();
        let dkim_part = if dkim.is_empty() {
            ";\r\n\tdkim=none".to_string()
        } else {
            methods_of(
                AuthenticationResults::new(host).with_dkim_results(&dkim, &from_domain),
                host,
            )
        };
        let mail_from_domain = match sender.rsplit_once('@') {
            Some((_, domain)) => domain,
            None => helo,
        };
        let dmarc = auth
            .verify_dmarc(DmarcParameters::new(&parsed, &dkim, mail_from_domain, &spf))
            .await;
        let dmarc_part = methods_of(
            AuthenticationResults::new(host).with_dmarc_result(&dmarc),
            host,
        );
        format!("{host}{spf_part}{dkim_part}{dmarc_part}")
    }

    /// The header when DNS gave no verdict in time (RFC 8601 section 2.7.1: a transient
    /// error).
    fn temperror(&self, envelope: &Envelope<'_>) -> String {
        let mailfrom = if envelope.sender.is_empty() {
            "<>"
        } else {
            envelope.sender
        };
        format!(
            "{};\r\n\tspf=temperror smtp.mailfrom={mailfrom};\r\n\tdkim=temperror;\r\n\tdmarc=temperror",
            self.hostname
        )
    }
}

/// `message` without the `Authentication-Results:` fields in its header that claim to
/// be ours (authserv-id `hostname`): RFC 8601 section 5 has a border MTA remove them,
/// since a sender could otherwise forge "spf=pass" in our name for the filters and mail
/// clients behind us. Fields of other hosts stay.
pub fn remove_forged(message: &[u8], hostname: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len());
    let mut in_header = true;
    let mut dropping = false;
    for line in message.split_inclusive(|&b| b == b'\n') {
        if in_header {
            match line.first() {
                Some(b' ' | b'\t') if dropping => continue,
                Some(b' ' | b'\t') => {}
                _ => match field_name(line) {
                    Some(name) => {
                        dropping = name.eq_ignore_ascii_case(b"Authentication-Results")
                            && claims(line, hostname);
                        if dropping {
                            continue;
                        }
                    }
                    // The empty line, or a line that is no field: the body begins.
                    None => in_header = false,
                },
            }
        }
        out.extend_from_slice(line);
    }
    out
}

/// The name of the header field `line` starts, if it starts one (RFC 5322 section 3.6.8:
/// printable characters but the colon, then optional white space and the colon).
fn field_name(line: &[u8]) -> Option<&[u8]> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = line[..colon].trim_ascii_end();
    let ok = !name.is_empty() && name.iter().all(|b| b.is_ascii_graphic());
    ok.then_some(name)
}

/// Whether the `Authentication-Results:` field on `line` names `hostname` as its
/// authserv-id (the first word of its value).
fn claims(line: &[u8], hostname: &str) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return false;
    };
    let value = String::from_utf8_lossy(&line[colon + 1..]);
    let id = value
        .split(';')
        .next()
        .and_then(|first| first.split_whitespace().next())
        .unwrap_or("");
    id.eq_ignore_ascii_case(hostname)
}

/// The results mail-auth wrote, without the authserv-id it starts them with: each
/// method is formatted by its own builder (which names the host in its comments), and
/// the header joins them.
fn methods_of(results: AuthenticationResults<'_>, host: &str) -> String {
    let text = results.to_string();
    match text.strip_prefix(host) {
        Some(rest) => rest.to_string(),
        None => text,
    }
}

/// What goes into the header from the client (its HELO name, its sender address):
/// printable ASCII without white space or `;`, bounded, so that it cannot end the
/// field, start another or change the meaning of the results.
fn printable(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_graphic() && *c != ';' && *c != '(' && *c != ')')
        .take(256)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_text_cannot_break_the_header() {
        assert_eq!(printable("a@b.example\r\nX-Evil: 1"), "a@b.exampleX-Evil:1");
        assert_eq!(printable("x;dkim=pass (comment)"), "xdkim=passcomment");
        assert_eq!(printable(&"a".repeat(1000)).len(), 256);
    }

    #[test]
    fn fields_claiming_to_be_ours_are_removed() {
        let message = b"Received: from x\n\
            Authentication-Results: MX.example; spf=pass\n\
            \tsmtp.mailfrom=a@b\n\
            Authentication-Results : other.example; spf=fail\n\
            authentication-results:mx.example 1;dkim=pass\n\
            Subject: hi\n\
            \n\
            Authentication-Results: mx.example; body text stays\n";
        let kept = remove_forged(message, "mx.example");
        assert_eq!(
            String::from_utf8(kept).unwrap(),
            "Received: from x\n\
             Authentication-Results : other.example; spf=fail\n\
             Subject: hi\n\
             \n\
             Authentication-Results: mx.example; body text stays\n"
        );
        // A body that starts without the empty line is not searched either.
        let kept = remove_forged(
            b"Subject: x\nno field here\nAuthentication-Results: mx.example;\n",
            "mx.example",
        );
        assert!(
            String::from_utf8(kept)
                .unwrap()
                .ends_with("Authentication-Results: mx.example;\n")
        );
    }

    #[test]
    fn no_resolver_is_temperror_for_every_method() {
        let auth = AuthResults {
            hostname: "mx.example".into(),
            resolver: Err("no resolv.conf".into()),
        };
        let envelope = Envelope {
            client: "192.0.2.1".parse().unwrap(),
            helo: "client.example",
            sender: "",
        };
        let header = auth.header(b"From: a@b.example\n\nhi\n", &envelope);
        assert_eq!(
            header,
            "Authentication-Results: mx.example;\n\tspf=temperror smtp.mailfrom=<>;\n\t\
             dkim=temperror;\n\tdmarc=temperror\n"
        );
    }
}
