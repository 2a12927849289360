//! Connections kept open after a successful transaction, for the next message to the
//! same server (Postfix's `smtp_connection_cache_*`): a relayhost that takes thousands
//! of messages then sees one TCP connection, greeting, EHLO, STARTTLS and AUTH per agent
//! instead of one per message.
//!
//! Each `smtp-agent` process has its own cache (it delivers one message at a time, so it
//! never needs two connections to one server). A connection is only cached after the
//! server accepted the message: any failure, refusal or broken step closes it, so a
//! reused connection never needs RSET. An unused one is closed with QUIT after
//! `smtp_connection_cache_time_limit`, by [`Cache::expire`], which the agent calls when
//! it has waited that long for a job.

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use lettre::transport::smtp::client::SmtpConnection;

use super::ehlo::Features;

/// The `smtp_connection_*` parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// `smtp_connection_cache_on_demand`: whether connections are kept at all.
    pub enabled: bool,
    /// `smtp_connection_cache_time_limit`: how long an unused connection is kept.
    pub idle: Duration,
    /// `smtp_connection_reuse_time_limit`: no new transaction on a connection older.
    pub lifetime: Duration,
    /// `smtp_connection_reuse_count_limit`: at most this many reuses (N+1 transactions,
    /// as Postfix counts); 0 means no limit.
    pub reuses: u64,
}

/// What makes two sessions interchangeable. The TLS policy, the HELO name and the
/// password maps are the agent's for its whole life (a new configuration brings new
/// agents), so within one agent the server's address, the name its certificate is
/// checked against, the next hop the credentials are looked up by and whether TLS was
/// tried settle everything else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub addr: SocketAddr,
    pub host: String,
    pub nexthop: String,
    pub try_tls: bool,
}

/// A connection ready for MAIL FROM.
pub struct Connection {
    pub conn: SmtpConnection,
    /// The socket under lettre's stream (found by `client::socket_of`), for the check
    /// that the server has not closed it; `None` when it could not be told apart.
    pub fd: Option<RawFd>,
    /// What the server's EHLO offered (SIZE, DSN, AUTH): it is not asked again.
    pub features: Features,
    pub opened: Instant,
    /// Transactions so far.
    pub uses: u64,
}

struct Idle {
    key: Key,
    connection: Connection,
    since: Instant,
}

pub struct Cache {
    settings: Settings,
    /// The QUIT reply is waited for this long (`smtp_quit_timeout`).
    quit_timeout: Duration,
    idle: Vec<Idle>,
}

impl Cache {
    pub fn new(settings: Settings, quit_timeout: Duration) -> Cache {
        Cache {
            settings,
            quit_timeout,
            idle: Vec::new(),
        }
    }

    /// The cached connection for `key`, if there is one that may still be used and that
    /// the server has not closed. One that may not is closed on the way.
    pub fn take(&mut self, key: &Key, now: Instant) -> Option<Connection> {
        self.expire(now);
        let at = self.idle.iter().position(|i| &i.key == key)?;
        let mut connection = self.idle.swap_remove(at).connection;
        if now.saturating_duration_since(connection.opened) >= self.settings.lifetime {
            quit(&mut connection.conn, self.quit_timeout);
            return None;
        }
        // A server that closed the connection, or said something unasked (421 before
        // closing, a TLS alert), gets a new connection instead; nobody is left to QUIT.
        match connection.fd.is_none_or(still_open) {
            true => Some(connection),
            false => None,
        }
    }

    /// Keeps `connection`, after a transaction the server accepted, unless it has been
    /// used enough or is too old: then it is closed with QUIT.
    pub fn put(&mut self, key: Key, mut connection: Connection, now: Instant) {
        let s = &self.settings;
        let worn = s.reuses > 0 && connection.uses > s.reuses;
        let old = now.saturating_duration_since(connection.opened) >= s.lifetime;
        if !s.enabled || worn || old || s.idle.is_zero() {
            quit(&mut connection.conn, self.quit_timeout);
            return;
        }
        // One per key: an older one (there is none while the agent serves one job at a
        // time) would only wait to be closed.
        if let Some(at) = self.idle.iter().position(|i| i.key == key) {
            let mut old = self.idle.swap_remove(at);
            quit(&mut old.connection.conn, self.quit_timeout);
        }
        self.idle.push(Idle {
            key,
            connection,
            since: now,
        });
    }

    /// Closes with QUIT the connections unused for `smtp_connection_cache_time_limit`.
    pub fn expire(&mut self, now: Instant) {
        let idle = self.settings.idle;
        let (gone, kept) = std::mem::take(&mut self.idle)
            .into_iter()
            .partition(|i| now.saturating_duration_since(i.since) >= idle);
        self.idle = kept;
        self.close(gone);
    }

    /// When the next unused connection is due to be closed.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.idle.iter().map(|i| i.since + self.settings.idle).min()
    }

    /// Closes every connection with QUIT (the agent is about to exit).
    pub fn close_all(&mut self) {
        let all = std::mem::take(&mut self.idle);
        self.close(all);
    }

    fn close(&self, list: Vec<Idle>) {
        for mut i in list {
            quit(&mut i.connection.conn, self.quit_timeout);
        }
    }

    /// The sockets of the cached connections, which a new connection's is not.
    pub fn sockets(&self) -> Vec<RawFd> {
        self.idle.iter().filter_map(|i| i.connection.fd).collect()
    }
}

/// QUIT, waiting for the reply at most `timeout`; the connection closes when dropped.
pub fn quit(conn: &mut SmtpConnection, timeout: Duration) {
    let _ = conn.set_timeout(Some(timeout.max(Duration::from_millis(1))));
    let _ = conn.quit();
}

/// Whether the socket is still open with nothing unread: a peek that does not wait.
/// End of stream (the server closed), unread bytes (nothing is owed to us between
/// transactions: a 421 before closing, or a TLS alert) or an error all mean no. The
/// descriptor is the connection's, open as long as the connection is; were it another
/// socket by mistake, a peek would take nothing from it.
fn still_open(fd: RawFd) -> bool {
    use nix::sys::socket::{MsgFlags, recv};
    let mut byte = [0u8; 1];
    matches!(
        recv(fd, &mut byte, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT),
        Err(nix::errno::Errno::EAGAIN)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    #[test]
    fn a_socket_is_open_until_the_peer_closes_or_speaks() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        assert!(still_open(client.as_raw_fd()));
        server.write_all(b"421 bye\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(!still_open(client.as_raw_fd()), "unread data");

        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        drop(server);
        std::thread::sleep(Duration::from_millis(50));
        assert!(!still_open(client.as_raw_fd()), "closed");
    }
}
