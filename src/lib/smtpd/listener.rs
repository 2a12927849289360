//! The network listener: sockets for `inet_interfaces` × `inet_protocols` on
//! `smtpd_port`, one accept thread per socket, one thread per session, at most
//! `smtpd_process_limit` sessions at once (the rest are told `421` and closed).
//! Each connection is first counted for its client ([`super::anvil`]): one that goes
//! over its client's limits is told `421` and closed at once, before it takes a
//! session's place, so that one client cannot fill the listener for everyone.
//!
//! A socket that cannot be bound is a logged warning, not a failure: the daemon's
//! pickup and delivery must go on when port 25 is taken.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::Service;
use super::anvil::{Exceeded, Ticket};
use super::connection::{Connection, Deadline, TimedSocket, Transport};
use super::relay;
use super::reply;
use super::session::{self, Client, Server};

/// How often accept threads look at the stop flag.
const POLL_INTERVAL_MS: u16 = 250;
/// How long a stopping listener waits for sessions in progress to finish.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long a refused client may take to receive its `421` (it fits in the socket's
/// buffer, so in practice no time at all): the accept thread must not wait on it.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The addresses to listen on, from `inet_interfaces` and `inet_protocols`. Names other
/// than `all`, `loopback-only` and `localhost` are not looked up (no DNS); they are
/// returned as warnings.
pub fn bind_addresses(
    interfaces: &[String],
    protocols: &[String],
    port: u16,
) -> (Vec<SocketAddr>, Vec<String>) {
    let (ipv4, ipv6) = relay::protocols(protocols);
    let mut addrs: Vec<IpAddr> = Vec::new();
    let mut warnings = Vec::new();
    let add = |ip: IpAddr, addrs: &mut Vec<IpAddr>| {
        if !addrs.contains(&ip) {
            addrs.push(ip);
        }
    };
    for item in interfaces {
        match item.to_ascii_lowercase().as_str() {
            "all" => {
                add(IpAddr::V4(Ipv4Addr::UNSPECIFIED), &mut addrs);
                add(IpAddr::V6(Ipv6Addr::UNSPECIFIED), &mut addrs);
            }
            "loopback-only" | "localhost" => {
                add(IpAddr::V4(Ipv4Addr::LOCALHOST), &mut addrs);
                add(IpAddr::V6(Ipv6Addr::LOCALHOST), &mut addrs);
            }
            other => {
                let bare = other
                    .strip_prefix('[')
                    .and_then(|s| s.strip_suffix(']'))
                    .unwrap_or(other);
                match bare.parse::<IpAddr>() {
                    Ok(ip) => add(ip.to_canonical(), &mut addrs),
                    Err(_) => warnings.push(format!(
                        "inet_interfaces: \"{item}\" is not an IP address; host names are not looked up"
                    )),
                }
            }
        }
    }
    let wanted = |ip: &IpAddr| if ip.is_ipv4() { ipv4 } else { ipv6 };
    let list = addrs
        .into_iter()
        .filter(wanted)
        .map(|ip| SocketAddr::new(ip, port))
        .collect();
    (list, warnings)
}

/// Bound listening sockets, each with the server of its service, ready to serve.
pub struct Listeners {
    sockets: Vec<(TcpListener, Arc<Server>, Service)>,
    process_limit: usize,
}

impl Listeners {
    /// Binds what `config` asks for, in this process: the SMTP listener and, when
    /// [`submission_usable`] says it can work, the submission one (logging as
    /// `submission`). Sockets that cannot be bound are logged and left out; an empty
    /// `smtpd_port` gives no SMTP sockets at all.
    pub fn bind(
        config: &crate::config::Config,
        queue: crate::queue::Queue,
        log: Arc<crate::log::Log>,
    ) -> crate::sysexits::Result<Listeners> {
        let server = super::server_from_config(config, queue.clone(), log.clone(), Service::Smtp)?;
        let sockets = bind_configured(config, &log)?;
        let mut listeners = Listeners::serve(config, sockets, server)?;
        let smtps_log = Arc::new(log.for_service(super::smtps::SERVICE));
        let log = Arc::new(log.for_service("submission"));
        let submission = submission_addresses(config, &log)?;
        if !submission.is_empty() {
            let sockets = bind_all(&submission, &log);
            let server =
                super::server_from_config(config, queue.clone(), log, Service::Submission)?;
            listeners.add(sockets, server, Service::Submission);
        }
        let smtps = super::smtps::server(config, queue, smtps_log)?;
        listeners.with_smtps(config, smtps)
    }

    /// Moves the sockets on `smtps_port` from the plain listener's to the SMTPS server
    /// (TLS from the first byte): the daemon binds and hands them over with the others,
    /// and they are told apart by their port. Without a server (no usable SMTPS
    /// listener) they are not served at all.
    pub fn with_smtps(
        mut self,
        config: &crate::config::Config,
        server: Option<Server>,
    ) -> crate::sysexits::Result<Listeners> {
        // On the plain listener's port (a mistake the daemon does not bind for), the
        // sockets are the plain listener's.
        let plain = config.get("smtpd_port")?;
        let Some(port) = super::smtps::port(config)? else {
            return Ok(self);
        };
        if plain.trim() == port.to_string() {
            return Ok(self);
        }
        let on_port = |(socket, _, service): &(TcpListener, Arc<Server>, Service)| {
            *service == Service::Smtp && socket.local_addr().map(|a| a.port()).ok() == Some(port)
        };
        let (smtps, rest): (Vec<_>, Vec<_>) = self.sockets.drain(..).partition(on_port);
        self.sockets = rest;
        match server {
            Some(server) => {
                let sockets = smtps.into_iter().map(|(socket, _, _)| socket).collect();
                self.add(sockets, server, Service::Smtps);
            }
            // Bound by a daemon that found the listener usable, and no longer so here
            // (the certificate changed in between): say why its clients get nothing.
            None => {
                if let Some((_, plain, _)) = smtps.first() {
                    let why = super::smtps::unusable(config)?.unwrap_or_else(|| {
                        format!("smtps_port = {port}: the SMTPS listener is off")
                    });
                    plain.log.warning(&why);
                }
            }
        }
        Ok(self)
    }

    /// Sockets bound elsewhere (the daemon's, inherited by the sessions process), served
    /// by `server` under `config`'s `smtpd_process_limit`.
    pub fn serve(
        config: &crate::config::Config,
        sockets: Vec<TcpListener>,
        server: Server,
    ) -> crate::sysexits::Result<Listeners> {
        let process_limit = config.number("smtpd_process_limit")?.max(1) as usize;
        let mut listeners = Listeners {
            sockets: Vec::new(),
            process_limit,
        };
        listeners.add(sockets, server, Service::Smtp);
        Ok(listeners)
    }

    /// More sockets, served by `server` as `service`, under the same session cap.
    pub fn add(&mut self, sockets: Vec<TcpListener>, server: Server, service: Service) {
        let server = Arc::new(server);
        self.sockets.extend(
            sockets
                .into_iter()
                .map(|socket| (socket, Arc::clone(&server), service)),
        );
    }

    /// The SMTP addresses actually bound (with the port the system chose for port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.addrs_of(Service::Smtp)
    }

    /// The submission addresses actually bound.
    pub fn submission_addrs(&self) -> Vec<SocketAddr> {
        self.addrs_of(Service::Submission)
    }

    fn addrs_of(&self, service: Service) -> Vec<SocketAddr> {
        self.sockets
            .iter()
            .filter(|(_, _, s)| *s == service)
            .filter_map(|(socket, _, _)| socket.local_addr().ok())
            .collect()
    }

    /// Starts one accept thread per socket. Each returns once `stop` is set, after the
    /// sessions in progress have finished (or a grace period has passed).
    pub fn spawn(self, stop: Arc<AtomicBool>) -> Vec<JoinHandle<()>> {
        let active = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::new();
        for (socket, server, service) in self.sockets {
            let warn_to = Arc::clone(&server);
            let implicit_tls = service == Service::Smtps;
            let stop = stop.clone();
            let active = active.clone();
            let limit = self.process_limit;
            let spawned = std::thread::Builder::new()
                .name("smtpd-accept".into())
                .spawn(move || accept_loop(socket, server, implicit_tls, limit, active, stop));
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => warn_to
                    .log
                    .warning(&format!("cannot start SMTP listener thread: {e}")),
            }
        }
        handles
    }
}

/// The addresses `config` asks the listener for (`smtpd_port` × `inet_interfaces` ×
/// `inet_protocols`, then the same for a usable `smtps_port`); none for an empty port.
/// Interface names that are not addresses are logged to `log` and left out.
pub fn configured_addresses(
    config: &crate::config::Config,
    log: &crate::log::Log,
) -> crate::sysexits::Result<Vec<SocketAddr>> {
    let mut addrs = addresses_of(config, "smtpd_port", log)?;
    // The SMTPS listener's, bound and handed over with the others.
    addrs.extend(super::smtps::addresses(config, log)?);
    Ok(addrs)
}

/// The addresses of the submission listener (`submission_port` at the same interfaces);
/// none when `submission_port` is empty, or when the service could not work (see
/// [`submission_usable`], which says why in `log`).
pub fn submission_addresses(
    config: &crate::config::Config,
    log: &crate::log::Log,
) -> crate::sysexits::Result<Vec<SocketAddr>> {
    let addrs = addresses_of(config, "submission_port", log)?;
    if addrs.is_empty() {
        return Ok(addrs);
    }
    if let Err(why) = submission_usable(config) {
        log.warning(&format!("{why}; the submission port is not opened"));
        return Ok(Vec::new());
    }
    Ok(addrs)
}

/// Whether the submission service can take any mail: it needs STARTTLS (a certificate
/// that loads) and AUTH (Dovecot). Without either every client would be refused after
/// connecting; a closed port with a warning is the clearer failure.
pub fn submission_usable(config: &crate::config::Config) -> Result<(), String> {
    match super::tls::from_config(config).map_err(|e| e.to_string())? {
        Ok(_) => {}
        Err(super::tls::TlsLoadError::NoCertFile) => {
            return Err(
                "submission_port is set but smtpd_tls_cert_file is empty: submission \
                 requires STARTTLS"
                    .into(),
            );
        }
        Err(e) => {
            return Err(format!(
                "submission_port is set but the TLS certificate does not load ({e}): \
                 submission requires STARTTLS"
            ));
        }
    }
    submission_auth_usable(config)
        .map_err(|why| format!("submission_port is set but {why}: submission requires AUTH"))
}

/// Whether AUTH can work for a service that takes mail only from logged-in clients
/// (the submission port, and SMTPS, which is submission too): mailroom speaks only
/// Dovecot's protocol. The one check both listeners make, worded by each.
pub fn submission_auth_usable(config: &crate::config::Config) -> Result<(), String> {
    let kind = config.get("smtpd_sasl_type").map_err(|e| e.to_string())?;
    if !kind.trim().eq_ignore_ascii_case("dovecot") {
        return Err(format!(
            "smtpd_sasl_type = {kind} is not supported (only dovecot)"
        ));
    }
    Ok(())
}

fn addresses_of(
    config: &crate::config::Config,
    name: &str,
    log: &crate::log::Log,
) -> crate::sysexits::Result<Vec<SocketAddr>> {
    let port_text = config.get(name)?;
    let port_text = port_text.trim();
    if port_text.is_empty() {
        return Ok(Vec::new());
    }
    let Ok(port) = port_text.parse::<u16>() else {
        return Err(crate::sysexits::Error::config(format!(
            "parameter {name}: not a port number: \"{port_text}\""
        )));
    };
    let (addrs, warnings) = bind_addresses(
        &config.list("inet_interfaces")?,
        &config.list("inet_protocols")?,
        port,
    );
    for w in warnings {
        log.warning(&w);
    }
    // Only `name`'s: the SMTPS addresses are added once, by [`configured_addresses`].
    Ok(addrs)
}

/// Binds what `config` asks for; an address that cannot be bound is logged and left out.
pub fn bind_configured(
    config: &crate::config::Config,
    log: &crate::log::Log,
) -> crate::sysexits::Result<Vec<TcpListener>> {
    Ok(bind_all(&configured_addresses(config, log)?, log))
}

/// Binds each of `addrs`; one that cannot be bound is logged and left out.
pub fn bind_all(addrs: &[SocketAddr], log: &crate::log::Log) -> Vec<TcpListener> {
    let mut sockets = Vec::new();
    for &addr in addrs {
        match bind(addr) {
            Ok(socket) => sockets.push(socket),
            Err(e) => log.warning(&format!(
                "cannot listen on {addr}: {}; SMTP service there is off",
                crate::sysexits::describe_io(&e)
            )),
        }
    }
    sockets
}

/// Binds a listening socket; an IPv6 socket takes IPv6 only, so that `all` can bind
/// `0.0.0.0` and `[::]` side by side.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, bind, listen, setsockopt,
        socket, sockopt,
    };
    use std::os::fd::AsRawFd;
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    if addr.is_ipv6() {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    listen(&fd, Backlog::new(128).unwrap_or(Backlog::MAXCONN))?;
    Ok(TcpListener::from(fd))
}

/// Decrements the session count however the session thread ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn accept_loop(
    socket: TcpListener,
    server: Arc<Server>,
    implicit_tls: bool,
    limit: usize,
    active: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    while !stop.load(Ordering::SeqCst) {
        let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(POLL_INTERVAL_MS)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                server.log.warning(&format!("poll on SMTP listener: {e}"));
                std::thread::sleep(Duration::from_millis(POLL_INTERVAL_MS.into()));
                continue;
            }
        }
        let (stream, peer) = match socket.accept() {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                server.log.warning(&format!("accept: {e}"));
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let ip = peer.ip().to_canonical();
        // Counted before the session limit, so that a client over its own limits is
        // told so, and never takes a place that another client could have.
        let ticket = match count_client(&server, ip) {
            Ok(ticket) => ticket,
            Err((ticket, exceeded)) => {
                too_many_from(stream, &server, ip, exceeded, ticket.service());
                continue;
            }
        };
        if active.fetch_add(1, Ordering::SeqCst) >= limit {
            active.fetch_sub(1, Ordering::SeqCst);
            refuse(stream, &server, peer);
            continue;
        }
        let slot = Slot(active.clone());
        let session_server = server.clone();
        let spawned = std::thread::Builder::new()
            .name("smtpd".into())
            .spawn(move || {
                let _slot = slot;
                serve(stream, &session_server, implicit_tls, ip, ticket);
            });
        if let Err(e) = spawned {
            server
                .log
                .warning(&format!("cannot start session thread: {e}"));
        }
    }
    let deadline = Instant::now() + STOP_GRACE;
    while active.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Counts a connection from `ip` unless the client is exempt
/// (`smtpd_client_event_limit_exceptions`): its ticket, or the ticket and the limit it
/// goes over.
fn count_client(server: &Server, ip: IpAddr) -> Result<Option<Ticket>, (Ticket, Exceeded)> {
    let Some(anvil) = &server.anvil else {
        return Ok(None);
    };
    if server.limit_exceptions.iter().any(|net| net.contains(ip)) {
        return Ok(None);
    }
    match anvil.connect(ip) {
        (ticket, None) => Ok(Some(ticket)),
        (ticket, Some(exceeded)) => Err((ticket, exceeded)),
    }
}

/// One connection, from the TLS handshake for SMTPS ([`super::smtps::handshake`]) to
/// the end of its session.
fn serve(
    stream: TcpStream,
    server: &Server,
    implicit_tls: bool,
    ip: IpAddr,
    ticket: Option<Ticket>,
) {
    let mut client = Client::network(ip, &server.relay);
    // The address the client reached: Dovecot's lip=, and the log's.
    client.server_ip = stream.local_addr().ok().map(|a| a.ip().to_canonical());
    let deadline = Deadline::new(server.timeout, server.per_request_deadline);
    let mut conn = Connection::new(Transport::Tcp(TimedSocket::new(stream, deadline)));
    if implicit_tls && !super::smtps::handshake(server, &client, &mut conn) {
        return;
    }
    session::run(server, client, ticket, &mut conn);
}

/// A client over its connection count or rate limit: Postfix's reply, warning and log
/// lines, then the connection is closed.
fn too_many_from(
    stream: TcpStream,
    server: &Server,
    ip: IpAddr,
    exceeded: Exceeded,
    service: &str,
) {
    let client = Client::network(ip, &server.relay);
    let (what, n) = match exceeded {
        Exceeded::Count(n) => ("Connection concurrency", n),
        Exceeded::Rate(n) => ("Connection rate", n),
    };
    let warning = format!("{what} limit exceeded: {n} from {client} for service {service}");
    let reply = reply::too_many_connections_from(&server.settings.myhostname, &client.addr);
    let deadline = Deadline::new(REFUSE_TIMEOUT, true);
    let mut conn = Connection::new(Transport::Tcp(TimedSocket::new(stream, deadline)));
    session::refuse(server, &client, &mut conn, &reply, &warning);
}

fn refuse(mut stream: TcpStream, server: &Server, peer: SocketAddr) {
    let _ = stream.set_write_timeout(Some(REFUSE_TIMEOUT));
    let _ = stream.write_all(&reply::too_many_connections().to_wire());
    server.log.warning(&format!(
        "too many connections: refusing unknown[{}]",
        peer.ip().to_canonical()
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn shown(addrs: &[SocketAddr]) -> Vec<String> {
        addrs.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn unserved_smtps_sockets_are_logged() {
        let dir = tempfile::tempdir().unwrap();
        let maillog = dir.path().join("maillog");
        let socket = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = socket.local_addr().unwrap().port();
        let config = crate::config::Config::from_text(
            &format!("smtpd_port = 25\nsmtps_port = {port}"),
            std::path::Path::new("/nonexistent/main.cf"),
        );
        let log = Arc::new(crate::log::Log::new(
            "mailroom",
            "smtpd",
            "vm",
            crate::log::Sink::File(maillog.clone()),
        ));
        let queue = crate::queue::Queue::new(dir.path());
        let server = super::super::server_from_config(&config, queue, log, Service::Smtp).unwrap();
        let listeners = Listeners::serve(&config, vec![socket], server)
            .unwrap()
            .with_smtps(&config, None)
            .unwrap();
        assert!(listeners.local_addrs().is_empty());
        let text = std::fs::read_to_string(&maillog).unwrap();
        assert!(
            text.contains(&format!(
                "warning: smtps_port = {port}: smtpd_tls_cert_file is empty: the SMTPS listener is off"
            )),
            "{text}"
        );
    }

    #[test]
    fn submission_needs_dovecot_for_auth() {
        let config = |text: &str| {
            crate::config::Config::from_text(text, std::path::Path::new("/nonexistent/main.cf"))
        };
        assert_eq!(submission_auth_usable(&config("")), Ok(()));
        assert_eq!(
            submission_auth_usable(&config("smtpd_sasl_type = Dovecot")),
            Ok(())
        );
        assert_eq!(
            submission_auth_usable(&config("smtpd_sasl_type = cyrus")),
            Err("smtpd_sasl_type = cyrus is not supported (only dovecot)".to_string())
        );
    }

    #[test]
    fn interfaces_and_protocols() {
        let (a, w) = bind_addresses(&s(&["loopback-only"]), &s(&["all"]), 25);
        assert_eq!(shown(&a), ["127.0.0.1:25", "[::1]:25"]);
        assert!(w.is_empty());
        let (a, _) = bind_addresses(&s(&["all"]), &s(&["ipv4"]), 2525);
        assert_eq!(shown(&a), ["0.0.0.0:2525"]);
        let (a, _) = bind_addresses(&s(&["all"]), &s(&["ipv6"]), 25);
        assert_eq!(shown(&a), ["[::]:25"]);
        let (a, _) = bind_addresses(&s(&["localhost"]), &s(&["ipv4", "ipv6"]), 25);
        assert_eq!(shown(&a), ["127.0.0.1:25", "[::1]:25"]);
        let (a, w) = bind_addresses(
            &s(&["192.0.2.1", "[2001:db8::1]", "mail.example.com"]),
            &s(&["all"]),
            25,
        );
        assert_eq!(shown(&a), ["192.0.2.1:25", "[2001:db8::1]:25"]);
        assert_eq!(w.len(), 1);
        let (a, _) = bind_addresses(&s(&["192.0.2.1", "2001:db8::1"]), &s(&["ipv6"]), 25);
        assert_eq!(shown(&a), ["[2001:db8::1]:25"]);
    }
}
