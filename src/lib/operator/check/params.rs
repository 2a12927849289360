//! Problems in what `main.cf` says, found by reading it as the programs will.

use std::collections::HashSet;
use std::net::IpAddr;

use crate::config::{Config, ParamKind, known_parameters};
use crate::smtpd::listener::bind_addresses;
use crate::smtpd::relay::RelayPolicy;

use super::{Problem, Severity, split_located};
use crate::operator::suggest;

/// Every problem in `config`'s parameters (in no particular order).
pub fn check(config: &Config) -> Vec<Problem> {
    let mut found = Vec::new();
    loader_warnings(config, &mut found);
    names(config, &mut found);
    let failed = types(config, &mut found);
    if !failed.contains("mydestination") && !failed.contains("relay_domains") {
        overlap(config, &mut found);
    }
    relay_control(config, &failed, &mut found);
    // Asked once: it loads the certificate, and both checks below need its answer.
    let smtps_unusable = crate::smtpd::smtps::unusable(config);
    authentication(config, &failed, &smtps_unusable, &mut found);
    mail_owner(config, &mut found);
    smtps(config, &smtps_unusable, &mut found);
    found
}

/// What the SMTP sessions would warn about for AUTH and the submission ports: restrictions
/// mailroom does not know, a SASL type it does not speak, a Dovecot socket that is not
/// there, and a submission port that could not work (and is therefore not opened).
fn authentication(
    config: &Config,
    failed: &HashSet<String>,
    smtps_unusable: &crate::sysexits::Result<Option<String>>,
    found: &mut Vec<Problem>,
) {
    let mut warn = |name: &str, problem: String| {
        found.push(Problem::param(config, name, Severity::Warning, problem));
    };
    let mut warnings = Vec::new();
    let _ =
        crate::smtpd::restrictions::Restrictions::from_config(config, &mut |w| warnings.push(w));
    // Each warning opens with the list it is about (the open-relay one names both; it
    // is placed at the relay list, where the missing restriction goes).
    for warning in warnings {
        let name = ["smtpd_recipient_restrictions", "smtpd_relay_restrictions"]
            .into_iter()
            .find(|name| warning.starts_with(name))
            .unwrap_or("smtpd_relay_restrictions");
        warn(name, warning);
    }
    let submission = config
        .get("submission_port")
        .is_ok_and(|p| !p.trim().is_empty())
        && !failed.contains("submission_port");
    if submission && let Err(why) = crate::smtpd::listener::submission_usable(config) {
        warn(
            "submission_port",
            format!("{why}; the submission port is not opened"),
        );
    }
    // SMTPS is submission too: AUTH on there whatever smtpd_sasl_auth_enable says, once
    // it can run at all (why it cannot is smtps()'s to say).
    let smtps = crate::smtpd::smtps::port(config).is_ok_and(|p| p.is_some())
        && matches!(smtps_unusable, Ok(None));
    let enabled = config.boolean("smtpd_sasl_auth_enable").unwrap_or(false);
    if !(enabled || submission || smtps) {
        return;
    }
    let mut sasl_warnings = Vec::new();
    let sasl = crate::sasl::SaslSettings::for_submission(config, &mut |w| sasl_warnings.push(w));
    for warning in sasl_warnings {
        warn("smtpd_sasl_type", warning);
    }
    // Only a socket that is certainly not there: a directory closed to this user
    // (private/ is mail_owner's) says nothing.
    if let Ok(Some(sasl)) = sasl
        && std::fs::symlink_metadata(&sasl.path)
            .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
    {
        warn(
            "smtpd_sasl_path",
            format!(
                "Dovecot's auth socket {} does not exist: AUTH is answered 454 until Dovecot \
                 listens there (service auth {{ unix_listener {} {{ ... }} }})",
                sasl.path.display(),
                sasl.path.display()
            ),
        );
    }
}

/// An SMTPS listener asked for that cannot run (no certificate, one that does not load,
/// the port of the plain listener, no AUTH it could use) stays off: say why
/// (`unusable` is `smtps::unusable`'s answer). A port that is not one is reported with
/// the other values.
fn smtps(
    config: &Config,
    unusable: &crate::sysexits::Result<Option<String>>,
    found: &mut Vec<Problem>,
) {
    if let Ok(Some(why)) = unusable {
        found.push(Problem::param(
            config,
            "smtps_port",
            Severity::Warning,
            why.clone(),
        ));
    }
}

/// As root, `mail_owner` must name an account other than root's: without one the SMTP
/// listener stays off (its sessions run as that account) and the queue stays root's.
/// Another user's programs never change users, so it does not matter to them.
fn mail_owner(config: &Config, found: &mut Vec<Problem>) {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    if let Err(e) = config.mail_owner() {
        found.push(Problem::param(
            config,
            "mail_owner",
            Severity::Error,
            format!("{e}; the SMTP listener stays off until it names an account"),
        ));
    }
}

/// Problems met while loading and expanding: skipped lines, cycles, references to
/// parameters that do not exist. Unknown names are left to [`names`], which suggests a
/// spelling.
fn loader_warnings(config: &Config, found: &mut Vec<Problem>) {
    let file = config.file().display().to_string();
    for warning in config.warnings() {
        let (line, parameter, rest) = split_located(warning, config.file());
        if rest.starts_with("unknown parameter") {
            continue;
        }
        let severity = if rest.starts_with("undefined parameter") {
            Severity::Warning
        } else {
            Severity::Error
        };
        found.push(Problem {
            file: file.clone(),
            line,
            parameter: parameter.map(str::to_string),
            problem: match parameter {
                Some(name) => format!("parameter {name}: {rest}"),
                None => rest.to_string(),
            },
            severity,
        });
    }
}

/// Unknown names (with the nearest known one) and Postfix names without effect.
fn names(config: &Config, found: &mut Vec<Problem>) {
    for (name, _, _) in config.settings() {
        match known_parameters().iter().find(|p| p.name == name) {
            None => found.push(Problem::param(
                config,
                name,
                Severity::Warning,
                suggest::unknown_parameter(name),
            )),
            Some(info) if !info.effective => found.push(Problem::param(
                config,
                name,
                Severity::Note,
                format!(
                    "parameter {name} is accepted for compatibility with Postfix and has no effect"
                ),
            )),
            Some(_) => {}
        }
    }
}

/// Values of the wrong type, for every effective parameter the file sets. Returns the
/// names whose values could not be read, so later checks do not report them again.
fn types(config: &Config, found: &mut Vec<Problem>) -> HashSet<String> {
    let mut failed = HashSet::new();
    for (name, _, _) in config.settings() {
        let Some(info) = known_parameters().iter().find(|p| p.name == name) else {
            continue;
        };
        if !info.effective {
            continue;
        }
        let value = match config.get(name) {
            Ok(value) => value,
            // An expansion error: already reported by the loader.
            Err(_) => {
                failed.insert(name.to_string());
                continue;
            }
        };
        let typed = match info.kind {
            ParamKind::Time(_) => config.time(name).map(drop),
            ParamKind::Number => config.number(name).map(drop),
            ParamKind::Bool => config.boolean(name).map(drop),
            ParamKind::Tables => config.tables(name).map(drop),
            ParamKind::String | ParamKind::List => Ok(()),
        };
        let problem = match typed {
            Err(e) => Some(split_located(&e.message, config.file()).2.to_string()),
            Ok(()) => special(config, name, &value),
        };
        if let Some(problem) = problem {
            failed.insert(name.to_string());
            found.push(Problem::param(
                config,
                name,
                Severity::Error,
                format!("parameter {name}: {problem}"),
            ));
        }
    }
    failed
}

/// Checks of parameters whose type alone says too little. `value` is expanded.
fn special(config: &Config, name: &str, value: &str) -> Option<String> {
    let one_of = |allowed: &[&str]| -> Option<String> {
        let v = value.to_ascii_lowercase();
        (!allowed.contains(&v.as_str())).then(|| {
            format!(
                "unknown value \"{value}\" (one of: {})",
                allowed
                    .iter()
                    .map(|a| if a.is_empty() { "empty" } else { a })
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    };
    match name {
        "relayhost" => relayhost_problem(value),
        "smtpd_port" | "submission_port" | "smtps_port" => {
            let port = value.trim();
            let ok = port.is_empty() || port.parse::<u16>().is_ok_and(|p| p > 0);
            (!ok).then(|| {
                format!("not a port number: \"{port}\" (1-65535, or empty for no listener)")
            })
        }
        "smtp_tls_security_level" => one_of(&["", "none", "may", "encrypt", "verify", "secure"]),
        "smtpd_tls_security_level" => one_of(&["", "none", "may", "encrypt"]),
        "mynetworks_style" => one_of(&["host", "subnet", "class"]),
        "smtpd_forbid_bare_newline" => one_of(&["normalize", "yes", "note", "reject", "no"]),
        "smtpd_forbid_bare_newline_reject_code" => {
            let ok = value
                .trim()
                .parse::<u16>()
                .is_ok_and(|code| (500..600).contains(&code));
            (!ok).then(|| format!("not a 5XX reply code: \"{value}\""))
        }
        "syslog_facility" => crate::log::facility(value).is_none().then(|| {
            format!("unknown syslog facility \"{value}\" (mail, daemon, user, local0-local7...); lines are logged as mail")
        }),
        "inet_protocols" => list(config, name)
            .find(|p| !["all", "ipv4", "ipv6"].contains(&p.to_ascii_lowercase().as_str()))
            .map(|p| format!("unknown protocol \"{p}\" (all, ipv4, ipv6)")),
        "allow_mail_to_commands" | "allow_mail_to_files" => list(config, name)
            .find(|p| !["alias", "forward", "include"].contains(&p.as_str()))
            .map(|p| format!("unknown class \"{p}\" (alias, forward, include)")),
        "dns_nameservers" => crate::dns::servers::parse_list(&list(config, name).collect::<Vec<_>>())
            .err(),
        "queue_directory" | "mail_spool_directory" => {
            (!value.starts_with('/')).then(|| format!("not an absolute path: \"{value}\""))
        }
        "home_mailbox" => value
            .starts_with('/')
            .then(|| format!("\"{value}\" must be relative to the home directory")),
        "default_privs" => match crate::privilege::user_by_name(value) {
            Ok(Some(user)) if user.uid.is_root() => {
                Some("must not be root: deliveries to commands and files would run as root".into())
            }
            Ok(Some(_)) => None,
            _ => Some(format!("no such user: \"{value}\"")),
        },
        _ => None,
    }
}

fn list(config: &Config, name: &str) -> impl Iterator<Item = String> {
    config.list(name).unwrap_or_default().into_iter()
}

/// `relayhost`: empty, or `host`, `host:port`, `[host]`, `[host]:port`, `[address]:port`;
/// Postfix 3.5 also takes a list of them.
pub fn relayhost_problem(value: &str) -> Option<String> {
    value
        .split([' ', ',', '\t'])
        .filter(|item| !item.is_empty())
        .find_map(|item| relay_item_problem(item).map(|why| format!("\"{item}\": {why}")))
}

fn relay_item_problem(item: &str) -> Option<&'static str> {
    let (host, port, bracketed) = if let Some(rest) = item.strip_prefix('[') {
        let Some((inside, after)) = rest.split_once(']') else {
            return Some("unbalanced [");
        };
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => return Some("unexpected text after ]"),
            },
        };
        (inside, port, true)
    } else {
        match item.rsplit_once(':') {
            // An IPv6 address is only accepted in brackets, as Postfix requires.
            Some((host, _)) if host.contains(':') => {
                return Some("put an IPv6 address in brackets");
            }
            Some((host, port)) => (host, Some(port), false),
            None => (item, None, false),
        }
    };
    if let Some(port) = port {
        let numeric = port.parse::<u16>().is_ok_and(|p| p > 0);
        // A service name (`submission`) has a letter; all digits must be a port number.
        let service = port.bytes().any(|b| b.is_ascii_alphabetic())
            && port.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !numeric && !service {
            return Some("bad port");
        }
    }
    let inner = host.strip_prefix("ipv6:").unwrap_or(host);
    if bracketed && inner.parse::<IpAddr>().is_ok() {
        return None;
    }
    if !is_host_name(host) {
        return Some("not a host name");
    }
    None
}

fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// A domain in both `mydestination` and `relay_domains`: mail for it is delivered
/// locally, and the relay entry does nothing — one of them is a mistake.
fn overlap(config: &Config, found: &mut Vec<Problem>) {
    let (Ok(local), Ok(relay)) = (config.mydestination(), config.list("relay_domains")) else {
        return;
    };
    for domain in relay {
        let lowered = domain.to_ascii_lowercase();
        if local.contains(&lowered) {
            found.push(Problem::param(
                config,
                "relay_domains",
                Severity::Warning,
                format!(
                    "domain \"{domain}\" is in both mydestination and relay_domains; mail for it is delivered locally"
                ),
            ));
        }
    }
}

/// What the SMTP server's relay control and listener would skip with a warning:
/// `mynetworks` entries that are not networks, tables in `relay_domains`, interfaces that
/// are not addresses.
fn relay_control(config: &Config, failed: &HashSet<String>, found: &mut Vec<Problem>) {
    let mut warnings = Vec::new();
    let relay_inputs = [
        "relay_domains",
        "inet_protocols",
        "mynetworks",
        "mynetworks_style",
        "mydestination",
    ];
    if !relay_inputs.iter().any(|n| failed.contains(*n)) {
        let _ = RelayPolicy::from_config(config, &mut |w| warnings.push(w));
    }
    if let (Ok(interfaces), Ok(protocols)) = (
        config.list("inet_interfaces"),
        config.list("inet_protocols"),
    ) {
        warnings.extend(bind_addresses(&interfaces, &protocols, 25).1);
    }
    for warning in warnings {
        // "mynetworks: not an address or network, ignoring ..." and the like.
        let (name, rest) = warning.split_once(": ").unwrap_or(("", warning.as_str()));
        // mynetworks_style is reported by the type check already.
        if name == "mynetworks_style" {
            continue;
        }
        let name = if name.is_empty() { "mynetworks" } else { name };
        found.push(Problem::param(
            config,
            name,
            Severity::Warning,
            format!("parameter {name}: {rest}"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn problems(text: &str) -> Vec<String> {
        // An account that exists, for a test run as root (last: the lines above keep
        // their numbers).
        let text = format!("{text}\nmail_owner = nobody\n");
        let config = Config::from_text(&text, Path::new("/etc/mailroom/main.cf"));
        let mut all = check(&config);
        all.sort_by_key(|p| p.line);
        all.iter().map(|p| p.text()).collect()
    }

    #[test]
    fn a_clean_file_has_no_problems() {
        let text = "myhostname = mail.example.com\nmydestination = $myhostname, localhost\n\
                    relayhost = [smtp.example.net]:587\nmynetworks = 127.0.0.0/8 [::1]/128\n\
                    maximal_queue_lifetime = 2d\nsmtp_sasl_auth_enable = yes\n";
        assert_eq!(problems(text), Vec::<String>::new());
    }

    #[test]
    fn an_open_relay_warning_points_at_the_relay_list() {
        let got = problems(
            "mydomain = example.com\nsmtpd_relay_restrictions = permit_mynetworks\n\
             smtpd_recipient_restrictions = permit_mynetworks\n",
        );
        let relay: Vec<_> = got.iter().filter(|p| p.contains("open relay")).collect();
        assert_eq!(relay.len(), 1, "{got:?}");
        assert!(
            relay[0].contains("line 2: smtpd_relay_restrictions and smtpd_recipient_restrictions"),
            "{got:?}"
        );
    }

    #[test]
    fn auth_and_submission_that_cannot_work() {
        let got = problems(
            "queue_directory = /nonexistent/queue\nsubmission_port = 587\n\
             smtpd_recipient_restrictions = permit_sasl_authenticated, reject_rbl_client zen.spamhaus.org\n",
        );
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(
            got[0].contains("Dovecot's auth socket /nonexistent/queue/private/auth does not exist"),
            "{got:?}"
        );
        assert!(
            got[1].contains("line 2: submission_port is set but smtpd_tls_cert_file is empty"),
            "{got:?}"
        );
        assert!(
            got[2].contains(
                "line 3: smtpd_recipient_restrictions: restriction \"reject_rbl_client\""
            ),
            "{got:?}"
        );
        let got = problems("smtpd_sasl_auth_enable = yes\nsmtpd_sasl_type = cyrus\n");
        assert!(
            got.iter()
                .any(|p| p.contains("line 2: unsupported SASL server implementation: cyrus")),
            "{got:?}"
        );
    }

    #[test]
    fn unknown_names_and_notes() {
        let got = problems("mydestinaton = x\nbiff = no\n");
        assert_eq!(
            got,
            [
                "/etc/mailroom/main.cf, line 1: unknown parameter \"mydestinaton\" (did you mean \"mydestination\"?)",
                "/etc/mailroom/main.cf, line 2: note: parameter biff is accepted for compatibility with Postfix and has no effect",
            ]
        );
    }

    #[test]
    fn wrong_types() {
        let got = problems(
            "maximal_queue_lifetime = 5x\nmessage_size_limit = 10M\nsmtp_sasl_auth_enable = true\n\
             alias_maps = /etc/aliases\nsmtpd_port = 99999\nsyslog_facility = mial\n\
             smtpd_forbid_bare_newline = strict\nsmtpd_forbid_bare_newline_reject_code = 450\n",
        );
        assert_eq!(got.len(), 8, "{got:?}");
        assert!(
            got[0].contains("line 1: parameter maximal_queue_lifetime: bad time value: \"5x\"")
        );
        assert!(got[1].contains("line 2: parameter message_size_limit: bad numerical value"));
        assert!(got[2].contains("line 3: parameter smtp_sasl_auth_enable: bad boolean"));
        assert!(got[3].contains("line 4: parameter alias_maps: table"));
        assert!(got[4].contains("line 5: parameter smtpd_port: not a port number"));
        assert!(got[5].contains("line 6: parameter syslog_facility: unknown syslog facility"));
        assert!(got[6].contains("line 7: parameter smtpd_forbid_bare_newline: unknown value"));
        assert!(
            got[7].contains("line 8: parameter smtpd_forbid_bare_newline_reject_code: not a 5XX")
        );
    }

    #[test]
    fn references_to_nothing() {
        let got = problems("myorigin = $mydomian\n");
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].contains("line 1: parameter myorigin: undefined parameter $mydomian"));
    }

    #[test]
    fn mynetworks_entries_that_are_not_networks() {
        let got = problems("mynetworks = 127.0.0.0/8, 10.0.0.0/33 example.com\n");
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].contains("line 1: parameter mynetworks: not an address or network"));
        assert!(got[0].contains("10.0.0.0/33"));
    }

    #[test]
    fn overlapping_domains() {
        let got = problems("mydestination = a.example, B.example\nrelay_domains = b.example\n");
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].contains(
                "line 2: domain \"b.example\" is in both mydestination and relay_domains"
            )
        );
    }

    #[test]
    fn an_smtps_listener_without_a_certificate() {
        assert_eq!(
            problems("smtps_port = 465\n"),
            [
                "/etc/mailroom/main.cf, line 1: smtps_port = 465: smtpd_tls_cert_file is empty: the SMTPS listener is off"
            ]
        );
        assert_eq!(problems("smtps_port = 465s\n").len(), 1);
    }

    #[test]
    fn relayhosts() {
        for good in [
            "",
            "smtp.example.com",
            "smtp.example.com:587",
            "[smtp.example.com]",
            "[smtp.example.com]:submission",
            "[192.0.2.1]:25",
            "[ipv6:2001:db8::1]:25",
            "[2001:db8::1]",
            "a.example, b.example:26",
        ] {
            assert_eq!(relayhost_problem(good), None, "{good}");
        }
        for bad in [
            "[smtp.example.com",
            "smtp.example.com:",
            "smtp.example.com:99999",
            "[a]x",
            "2001:db8::1",
            "bad!host",
            "-x.example",
            "a..b",
            "[a]:",
        ] {
            assert!(relayhost_problem(bad).is_some(), "{bad}");
        }
        let got = problems("relayhost = [smtp.example.com\n");
        assert_eq!(
            got,
            [
                "/etc/mailroom/main.cf, line 1: parameter relayhost: \"[smtp.example.com\": unbalanced ["
            ]
        );
    }
}
