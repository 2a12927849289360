//! `smtpd_sasl_*` from `main.cf`, read once per sessions process: whether AUTH is on,
//! where Dovecot's socket is as this process sees it (chroot included), and the
//! mechanisms to offer: Dovecot's (asked and kept for a minute), those mailroom
//! supports, filtered by `smtpd_sasl_security_options` (or, over TLS,
//! `smtpd_sasl_tls_security_options`) as Postfix's Dovecot driver filters them.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::dovecot;
use crate::config::Config;
use crate::sysexits::Result;

/// How long the mechanism list Dovecot gave is used for EHLO replies before it is
/// asked again (it changes only when Dovecot's configuration does).
const MECHANISMS_FRESH: Duration = Duration::from_secs(60);

/// AUTH as `main.cf` configures it; only built when `smtpd_sasl_auth_enable = yes`
/// and the type is one mailroom speaks.
#[derive(Debug)]
pub struct SaslSettings {
    /// `smtpd_sasl_path` as written, for log lines.
    pub path_shown: String,
    /// The socket as this process reaches it.
    pub path: PathBuf,
    /// `smtpd_sasl_authenticated_header`: the login name in the `Received:` header.
    pub authenticated_header: bool,
    /// `broken_sasl_auth_clients`: also the `AUTH=PLAIN LOGIN` line of old Outlook.
    pub broken_clients: bool,
    /// `smtpd_sasl_service`: the service name Dovecot is told (`smtp`).
    pub service: String,
    /// `smtpd_sasl_security_options`, for sessions without TLS.
    pub plain_options: SecurityOptions,
    /// `smtpd_sasl_tls_security_options`, for sessions over TLS.
    pub tls_options: SecurityOptions,
    /// The last list Dovecot gave and when.
    mechanisms: Mutex<Option<(Instant, Vec<dovecot::Mechanism>)>>,
}

/// Postfix's SASL security options for the Dovecot driver: properties a mechanism must
/// not have (`noplaintext`, `noanonymous`, `nodictionary`, `noactive`) and must have
/// (`mutual_auth`, `forward_secrecy`), in Dovecot's spelling of the properties.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityOptions {
    forbidden: Vec<&'static str>,
    required: Vec<&'static str>,
}

impl SecurityOptions {
    /// Reads a list such as `noanonymous, noplaintext`; an unknown option is reported
    /// through `warn` and left out (Postfix stops with a fatal error).
    pub fn parse(name: &str, list: &[String], warn: &mut dyn FnMut(String)) -> SecurityOptions {
        let mut options = SecurityOptions::default();
        for item in list {
            match item.to_ascii_lowercase().as_str() {
                "noplaintext" => options.forbidden.push("plaintext"),
                "noanonymous" => options.forbidden.push("anonymous"),
                "nodictionary" => options.forbidden.push("dictionary"),
                "noactive" => options.forbidden.push("active"),
                "mutual_auth" => options.required.push("mutual-auth"),
                "forward_secrecy" => options.required.push("forward-secrecy"),
                _ => warn(format!(
                    "{name}: unknown SASL security option \"{item}\", ignored"
                )),
            }
        }
        options
    }

    fn allows(&self, mechanism: &dovecot::Mechanism) -> bool {
        self.forbidden.iter().all(|f| !mechanism.has(f))
            && self.required.iter().all(|r| mechanism.has(r))
    }
}

impl SaslSettings {
    /// `None` when AUTH is off. A `smtpd_sasl_type` other than `dovecot` turns it off
    /// with a warning through `warn` (Postfix stops with a fatal error; the listener
    /// going on without AUTH hurts fewer people than no mail at all).
    pub fn from_config(config: &Config, warn: &mut dyn FnMut(String)) -> Result<Option<Self>> {
        if !config.boolean("smtpd_sasl_auth_enable")? {
            return Ok(None);
        }
        SaslSettings::for_submission(config, warn)
    }

    /// AUTH as the submission service has it: on whatever `smtpd_sasl_auth_enable`
    /// says (Postfix's master.cf: `-o smtpd_sasl_auth_enable=yes`).
    pub fn for_submission(config: &Config, warn: &mut dyn FnMut(String)) -> Result<Option<Self>> {
        let kind = config.get("smtpd_sasl_type")?;
        if !kind.trim().eq_ignore_ascii_case("dovecot") {
            warn(format!(
                "unsupported SASL server implementation: {kind} (mailroom speaks only \
                 smtpd_sasl_type = dovecot); AUTH is off"
            ));
            return Ok(None);
        }
        let shown = config.get("smtpd_sasl_path")?.trim().to_string();
        let shown = shown.strip_prefix("unix:").unwrap_or(&shown).to_string();
        if shown.starts_with("inet:") {
            warn(format!(
                "smtpd_sasl_path = {shown}: TCP sockets are not supported, only Dovecot's \
                 UNIX socket; AUTH is off"
            ));
            return Ok(None);
        }
        if shown.is_empty() {
            warn("smtpd_sasl_path is empty; AUTH is off".into());
            return Ok(None);
        }
        let queue = config.queue_directory()?;
        let service = config.get("smtpd_sasl_service")?.trim().to_string();
        // It goes into Dovecot's tab-separated request line as it is.
        let name_like = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        let service = if !name_like(&service) {
            warn(format!(
                "smtpd_sasl_service: \"{service}\" is not a service name; using smtp"
            ));
            "smtp".to_string()
        } else {
            service
        };
        let plain_options = SecurityOptions::parse(
            "smtpd_sasl_security_options",
            &config.list("smtpd_sasl_security_options")?,
            warn,
        );
        let tls_options = SecurityOptions::parse(
            "smtpd_sasl_tls_security_options",
            &config.list("smtpd_sasl_tls_security_options")?,
            warn,
        );
        Ok(Some(SaslSettings {
            path: resolve(&shown, &queue),
            path_shown: shown,
            authenticated_header: config.boolean("smtpd_sasl_authenticated_header")?,
            broken_clients: config.boolean("broken_sasl_auth_clients")?,
            service,
            plain_options,
            tls_options,
            mechanisms: Mutex::new(None),
        }))
    }

    /// The socket as seen from inside `smtpd_chroot`'s jail at `queue`: a relative
    /// path is relative to the jail's root, as in Postfix; an absolute one must lie
    /// under `queue` (else `warn` says it cannot be reached).
    pub fn enter_jail(&mut self, queue: &Path, warn: &mut dyn FnMut(String)) {
        let shown = Path::new(&self.path_shown);
        self.path = if shown.is_relative() {
            Path::new("/").join(shown)
        } else if let Ok(inside) = shown.strip_prefix(queue) {
            Path::new("/").join(inside)
        } else {
            warn(format!(
                "smtpd_sasl_path {} is outside queue_directory {} and cannot be reached \
                 under smtpd_chroot = yes; AUTH will fail (use a path under the queue \
                 directory, as private/auth)",
                shown.display(),
                queue.display()
            ));
            shown.to_path_buf()
        };
    }

    /// The mechanisms to offer a session (over TLS or not): Dovecot's, filtered by
    /// [`SaslSettings::offered`]. When Dovecot cannot be asked, the last list it gave
    /// (or the supported ones, as plain-text mechanisms) with a warning: the client then
    /// tries and is told 454, a temporary failure it retries, rather than being told
    /// nothing of AUTH.
    pub fn mechanisms(&self, tls: bool, warn: &mut dyn FnMut(String)) -> Vec<String> {
        self.offered(&self.dovecot_mechanisms(warn), tls)
    }

    fn dovecot_mechanisms(&self, warn: &mut dyn FnMut(String)) -> Vec<dovecot::Mechanism> {
        let lock = || self.mechanisms.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((when, list)) = lock().as_ref()
            && when.elapsed() < MECHANISMS_FRESH
        {
            return list.clone();
        }
        // Not under the lock: a Dovecot that hangs holds up this session only.
        let asked = dovecot::connect(&self.path);
        let mut cache = lock();
        let list = match asked {
            Ok(client) => client.mechanisms().to_vec(),
            Err(e) => {
                warn(self.connect_failed(&e));
                cache.as_ref().map_or_else(
                    || {
                        super::SUPPORTED_MECHANISMS
                            .map(|name| dovecot::Mechanism {
                                name: name.into(),
                                flags: vec!["plaintext".into()],
                            })
                            .to_vec()
                    },
                    |(_, list)| list.clone(),
                )
            }
        };
        // A failure is remembered too: Dovecot is asked again (and its absence logged)
        // once a minute, not at every EHLO.
        *cache = Some((Instant::now(), list.clone()));
        list
    }
}

/// The directory under `queue_directory` that Dovecot's socket goes in (`private/` for
/// the default `private/auth`), when AUTH or a submission port (`submission_port`,
/// `smtps_port`) is configured and the socket is under the queue. Dovecot cannot start
/// when it is missing (its listener fails to bind), and Postfix's queue has it already;
/// mailroom's daemon makes it.
pub fn socket_directory(config: &Config) -> Option<PathBuf> {
    let wanted = config.boolean("smtpd_sasl_auth_enable").unwrap_or(false)
        || config
            .get("submission_port")
            .is_ok_and(|p| !p.trim().is_empty())
        || crate::smtpd::smtps::port(config).is_ok_and(|p| p.is_some());
    if !wanted {
        return None;
    }
    let settings = SaslSettings::for_submission(config, &mut |_| {}).ok()??;
    let queue = config.queue_directory().ok()?;
    let inside = settings.path.strip_prefix(&queue).ok()?;
    let dir = inside.parent()?;
    // Plain names only: never a way out of the queue directory.
    let plain = dir
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    (plain && !dir.as_os_str().is_empty()).then(|| queue.join(dir))
}

impl SaslSettings {
    /// Postfix's warning when the socket cannot be reached.
    pub fn connect_failed(&self, e: &dovecot::Error) -> String {
        match e {
            dovecot::Error::Connect(io) => format!(
                "SASL: Connect to Dovecot auth socket '{}' failed: {}",
                self.path_shown,
                crate::sysexits::describe_io(io)
            ),
            other => format!("SASL: Dovecot auth socket '{}': {other}", self.path_shown),
        }
    }

    /// The names of `mechanisms` offered to a session: supported by mailroom, not
    /// private, and allowed by the security options of a session with or without TLS.
    pub fn offered(&self, mechanisms: &[dovecot::Mechanism], tls: bool) -> Vec<String> {
        let options = if tls {
            &self.tls_options
        } else {
            &self.plain_options
        };
        mechanisms
            .iter()
            .filter(|m| !m.has("private") && options.allows(m))
            .filter(|m| super::SUPPORTED_MECHANISMS.contains(&m.name.as_str()))
            .map(|m| m.name.clone())
            .collect()
    }
}

/// `smtpd_sasl_path` without a chroot: relative to the queue directory, as Postfix
/// (whose daemons run in it) reads it.
fn resolve(path: &str, queue: &Path) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        queue.join(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mech(name: &str, flags: &[&str]) -> dovecot::Mechanism {
        dovecot::Mechanism {
            name: name.into(),
            flags: flags.iter().map(|f| f.to_string()).collect(),
        }
    }

    fn settings(plain: &str, tls: &str) -> SaslSettings {
        let list = |text: &str| -> Vec<String> {
            text.split([',', ' '])
                .filter(|w| !w.is_empty())
                .map(String::from)
                .collect()
        };
        let mut warnings = Vec::new();
        let s = SaslSettings {
            path_shown: "private/auth".into(),
            path: PathBuf::from("/nonexistent/private/auth"),
            authenticated_header: false,
            broken_clients: false,
            service: "smtp".into(),
            plain_options: SecurityOptions::parse("x", &list(plain), &mut |w| warnings.push(w)),
            tls_options: SecurityOptions::parse("y", &list(tls), &mut |w| warnings.push(w)),
            mechanisms: Mutex::new(None),
        };
        assert!(warnings.is_empty(), "{warnings:?}");
        s
    }

    #[test]
    fn offered_mechanisms_keep_dovecot_order_and_obey_the_options() {
        let list = [
            mech("LOGIN", &["plaintext"]),
            mech("CRAM-MD5", &["dictionary"]),
            mech("ANONYMOUS", &["anonymous"]),
            mech("PLAIN", &["plaintext"]),
            mech("DOVECOT-TOKEN", &["private"]),
        ];
        // (smtpd_sasl_security_options, smtpd_sasl_tls_security_options, without TLS,
        // with TLS)
        let table: [(&str, &str, &[&str], &[&str]); 4] = [
            (
                "noanonymous",
                "noanonymous",
                &["LOGIN", "PLAIN"],
                &["LOGIN", "PLAIN"],
            ),
            (
                "noanonymous, noplaintext",
                "noanonymous",
                &[],
                &["LOGIN", "PLAIN"],
            ),
            ("", "", &["LOGIN", "PLAIN"], &["LOGIN", "PLAIN"]),
            ("mutual_auth", "forward_secrecy", &[], &[]),
        ];
        for (plain, tls, without, with) in table {
            let s = settings(plain, tls);
            assert_eq!(s.offered(&list, false), without, "{plain}");
            assert_eq!(s.offered(&list, true), with, "{tls}");
        }
        let mut warnings = Vec::new();
        SecurityOptions::parse(
            "smtpd_sasl_security_options",
            &["noplain".into()],
            &mut |w| warnings.push(w),
        );
        assert_eq!(warnings.len(), 1);
    }

    #[test]
    fn the_socket_directory_is_made_where_auth_is_used() {
        let private = Some(PathBuf::from("/var/spool/mailroom/private"));
        // (main.cf, the directory the daemon makes)
        let table = [
            ("", None),
            ("smtpd_sasl_auth_enable = yes", private.clone()),
            ("submission_port = 587", private.clone()),
            // SMTPS is submission: AUTH whatever smtpd_sasl_auth_enable says.
            ("smtps_port = 465", private.clone()),
            (
                "smtps_port = 465\nsmtpd_sasl_path = /run/dovecot/auth",
                None,
            ),
        ];
        for (text, dir) in table {
            let config = Config::from_text(text, Path::new("/nonexistent/main.cf"));
            assert_eq!(socket_directory(&config), dir, "{text}");
        }
    }

    #[test]
    fn paths_outside_and_inside_the_jail() {
        let queue = Path::new("/var/spool/mailroom");
        assert_eq!(
            resolve("private/auth", queue),
            Path::new("/var/spool/mailroom/private/auth")
        );
        assert_eq!(
            resolve("/run/dovecot/auth", queue),
            Path::new("/run/dovecot/auth")
        );
        // (smtpd_sasl_path, inside the jail, warned)
        let table = [
            ("private/auth", "/private/auth", false),
            ("/var/spool/mailroom/private/auth", "/private/auth", false),
            ("/run/dovecot/auth-client", "/run/dovecot/auth-client", true),
        ];
        for (shown, inside, warned) in table {
            let mut s = settings("", "");
            s.path_shown = shown.into();
            s.path = resolve(shown, queue);
            let mut warnings = Vec::new();
            s.enter_jail(queue, &mut |w| warnings.push(w));
            assert_eq!(s.path, Path::new(inside), "{shown}");
            assert_eq!(!warnings.is_empty(), warned, "{shown}");
        }
    }

    #[test]
    fn dovecot_down_still_offers_the_supported_mechanisms() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings("noanonymous", "noanonymous");
        s.path = dir.path().join("private/auth");
        let mut warnings = Vec::new();
        assert_eq!(
            s.mechanisms(true, &mut |w| warnings.push(w)),
            ["PLAIN", "LOGIN"]
        );
        assert!(
            warnings[0].starts_with("SASL: Connect to Dovecot auth socket 'private/auth' failed: "),
            "{warnings:?}"
        );
    }
}
