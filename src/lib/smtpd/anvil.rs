//! Per-client counters, as Postfix's anvil(8) keeps them: for each client (an address,
//! or a network block of `smtpd_client_ipv4_prefix_length` and
//! `smtpd_client_ipv6_prefix_length`: one IPv6 client has many addresses), the
//! connections open now and, per `anvil_rate_time_unit`, the connections made, MAIL
//! FROM and RCPT TO commands sent. The listener asks at each connection, the session
//! at each MAIL and RCPT; a [`Ticket`] stands for one open connection and gives it back
//! when dropped, however the session ends.
//!
//! Postfix runs anvil as its own server because its smtpd processes are many; ours are
//! threads of one process, so the table lives in that process, behind a mutex. It is
//! forgotten when the sessions process is restarted (a reload), as Postfix's anvil
//! forgets when it is restarted.
//!
//! Rates are counted as anvil counts them: a window opens at a client's first event and
//! is reset by the first event after `unit` has passed, which is simpler than a moving
//! average and stops a client as soon as it goes over. A client with no connection left
//! is forgotten `unit` after its last disconnect; the table never holds more than
//! [`Limits::max_clients`] clients (when it is full, the client idle for longest goes
//! first), so a flood of addresses cannot grow it without bound.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The most clients the table holds by default: at ~100 bytes each, a few MB.
pub const MAX_CLIENTS: usize = 50_000;

/// What is counted and where the limits are; a limit of 0 is off.
#[derive(Debug, Clone)]
pub struct Limits {
    /// `smtpd_client_connection_count_limit`: connections open at once.
    pub connection_count: u32,
    /// `smtpd_client_connection_rate_limit`: connections per `unit`.
    pub connection_rate: u32,
    /// `smtpd_client_message_rate_limit`: MAIL FROM commands per `unit`.
    pub message_rate: u32,
    /// `smtpd_client_recipient_rate_limit`: RCPT TO commands per `unit`.
    pub recipient_rate: u32,
    /// `anvil_rate_time_unit`.
    pub unit: Duration,
    /// `smtpd_client_ipv4_prefix_length` (at most 32): IPv4 clients are counted by
    /// network blocks of this size.
    pub ipv4_prefix: u8,
    /// `smtpd_client_ipv6_prefix_length` (at most 128).
    pub ipv6_prefix: u8,
    /// The most clients remembered at once.
    pub max_clients: usize,
}

/// Where the time comes from: the system's clock, or a test's.
pub trait Clock: Send + Sync {
    fn now(&self) -> Instant;
}

/// The monotonic system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// Why a connection is refused, with the count that went over, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    /// More connections open at once than `connection_count`.
    Count(u32),
    /// More connections in this time unit than `connection_rate`.
    Rate(u32),
}

/// One client's counters.
#[derive(Debug, Clone)]
struct Entry {
    /// Connections open now.
    count: u32,
    /// Events in the window that opened at `start`.
    connections: u32,
    mails: u32,
    rcpts: u32,
    start: Instant,
    /// When `count` last fell to 0 (the client is forgotten `unit` later).
    idle_since: Option<Instant>,
}

impl Entry {
    fn new(now: Instant) -> Entry {
        Entry {
            count: 0,
            connections: 0,
            mails: 0,
            rcpts: 0,
            start: now,
            idle_since: Some(now),
        }
    }

    /// Opens a new window when the old one is over (anvil's `ANVIL_REMOTE_INCR_RATE`).
    fn window(&mut self, now: Instant, unit: Duration) {
        if now.saturating_duration_since(self.start) > unit {
            self.connections = 0;
            self.mails = 0;
            self.rcpts = 0;
            self.start = now;
        }
    }

    fn expired(&self, now: Instant, unit: Duration) -> bool {
        self.count == 0
            && self
                .idle_since
                .is_some_and(|idle| now.saturating_duration_since(idle) > unit)
    }
}

/// The counters of every client, and the clock they are counted by.
pub struct Anvil {
    limits: Limits,
    /// The service name of log lines (`for service smtp`).
    service: String,
    clock: Box<dyn Clock>,
    table: Mutex<Table>,
}

struct Table {
    clients: HashMap<IpAddr, Entry>,
    /// When expired clients were last swept out.
    swept: Instant,
}

/// One open connection of a client that is counted. Dropping it closes the connection
/// in the counts.
pub struct Ticket {
    anvil: Arc<Anvil>,
    ip: IpAddr,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ticket({})", self.ip)
    }
}

impl Anvil {
    pub fn new(limits: Limits, service: &str) -> Arc<Anvil> {
        Anvil::with_clock(limits, service, Box::new(SystemClock))
    }

    pub fn with_clock(limits: Limits, service: &str, clock: Box<dyn Clock>) -> Arc<Anvil> {
        let now = clock.now();
        Arc::new(Anvil {
            limits,
            service: service.to_string(),
            clock,
            table: Mutex::new(Table {
                clients: HashMap::new(),
                swept: now,
            }),
        })
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // The table holds counts only; one left by a panicking thread is still usable.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new connection from `ip`. It is counted even when refused (as anvil counts it),
    /// until the ticket is dropped; `Some` says which limit it goes over.
    pub fn connect(self: &Arc<Self>, ip: IpAddr) -> (Ticket, Option<Exceeded>) {
        let ip = self.client_of(ip);
        let now = self.clock.now();
        let limits = &self.limits;
        let mut table = self.lock();
        let entry = table.entry(ip, now, limits);
        entry.window(now, limits.unit);
        entry.count = entry.count.saturating_add(1);
        entry.connections = entry.connections.saturating_add(1);
        entry.idle_since = None;
        let (count, rate) = (entry.count, entry.connections);
        drop(table);
        let exceeded = if limits.connection_count > 0 && count > limits.connection_count {
            Some(Exceeded::Count(count))
        } else if limits.connection_rate > 0 && rate > limits.connection_rate {
            Some(Exceeded::Rate(rate))
        } else {
            None
        };
        let ticket = Ticket {
            anvil: Arc::clone(self),
            ip,
        };
        (ticket, exceeded)
    }

    /// The key `ip` is counted under: its network block (an IPv4-mapped IPv6 address is
    /// its IPv4 address).
    fn client_of(&self, ip: IpAddr) -> IpAddr {
        match ip.to_canonical() {
            IpAddr::V4(v4) => {
                let bits = u32::from(self.limits.ipv4_prefix.min(32));
                let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
            }
            IpAddr::V6(v6) => {
                let bits = u32::from(self.limits.ipv6_prefix.min(128));
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        }
    }

    /// How many clients are remembered now.
    pub fn clients(&self) -> usize {
        self.lock().clients.len()
    }

    /// Counts one more event of `ip`'s and returns the count of this window when it goes
    /// over `limit` (0: no limit, nothing counted).
    fn event(&self, ip: IpAddr, limit: u32, pick: fn(&mut Entry) -> &mut u32) -> Option<u32> {
        if limit == 0 {
            return None;
        }
        let now = self.clock.now();
        let mut table = self.lock();
        let entry = table.entry(ip, now, &self.limits);
        entry.window(now, self.limits.unit);
        let counter = pick(entry);
        *counter = counter.saturating_add(1);
        let rate = *counter;
        (rate > limit).then_some(rate)
    }

    fn disconnect(&self, ip: IpAddr) {
        let now = self.clock.now();
        let mut table = self.lock();
        if let Some(entry) = table.clients.get_mut(&ip) {
            entry.count = entry.count.saturating_sub(1);
            if entry.count == 0 {
                entry.idle_since = Some(now);
            }
        }
    }
}

impl Table {
    /// `ip`'s entry, made if needed; expired clients are swept out once per time unit,
    /// and when the table is full.
    fn entry(&mut self, ip: IpAddr, now: Instant, limits: &Limits) -> &mut Entry {
        if now.saturating_duration_since(self.swept) > limits.unit {
            self.sweep(now, limits.unit);
        }
        let max = limits.max_clients.max(1);
        if !self.clients.contains_key(&ip) && self.clients.len() >= max {
            self.sweep(now, limits.unit);
            if self.clients.len() >= max {
                // A tenth at once, so that a flood of new addresses pays for this scan
                // once per thousands of connections, not at each.
                self.evict(max - (max / 10).max(1));
            }
        }
        self.clients.entry(ip).or_insert_with(|| Entry::new(now))
    }

    fn sweep(&mut self, now: Instant, unit: Duration) {
        self.clients.retain(|_, e| !e.expired(now, unit));
        self.swept = now;
    }

    /// Makes room in a full table, down to `keep` clients: those idle for longest go
    /// first, then, if every client has a connection open (more than the sessions limit
    /// allows, so not in practice), those whose window is oldest. A client forgotten
    /// with connections open is counted again from its next connection.
    fn evict(&mut self, keep: usize) {
        let excess = self.clients.len().saturating_sub(keep);
        if excess == 0 {
            return;
        }
        let mut order: Vec<(bool, Instant, IpAddr)> = self
            .clients
            .iter()
            .map(|(ip, e)| (e.idle_since.is_none(), e.idle_since.unwrap_or(e.start), *ip))
            .collect();
        order.select_nth_unstable(excess - 1);
        for (_, _, ip) in &order[..excess] {
            self.clients.remove(ip);
        }
    }
}

impl Ticket {
    /// A MAIL FROM: `Some(rate)` when it goes over `smtpd_client_message_rate_limit`.
    pub fn mail(&self) -> Option<u32> {
        let limit = self.anvil.limits.message_rate;
        self.anvil.event(self.ip, limit, |e| &mut e.mails)
    }

    /// A RCPT TO: `Some(rate)` when it goes over `smtpd_client_recipient_rate_limit`.
    pub fn rcpt(&self) -> Option<u32> {
        let limit = self.anvil.limits.recipient_rate;
        self.anvil.event(self.ip, limit, |e| &mut e.rcpts)
    }

    /// The service the counts are for (`smtp`).
    pub fn service(&self) -> &str {
        &self.anvil.service
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.anvil.disconnect(self.ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clock the test moves by hand.
    struct FakeClock(Arc<Mutex<Instant>>);

    impl Clock for FakeClock {
        fn now(&self) -> Instant {
            *self.0.lock().unwrap()
        }
    }

    struct Setup {
        anvil: Arc<Anvil>,
        time: Arc<Mutex<Instant>>,
    }

    impl Setup {
        fn advance(&self, by: Duration) {
            *self.time.lock().unwrap() += by;
        }
    }

    fn setup(count: u32, rate: u32, mail: u32, rcpt: u32, max_clients: usize) -> Setup {
        let time = Arc::new(Mutex::new(Instant::now()));
        let limits = Limits {
            connection_count: count,
            connection_rate: rate,
            message_rate: mail,
            recipient_rate: rcpt,
            unit: Duration::from_secs(60),
            ipv4_prefix: 32,
            ipv6_prefix: 84,
            max_clients,
        };
        let anvil = Anvil::with_clock(limits, "smtp", Box::new(FakeClock(time.clone())));
        Setup { anvil, time }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn concurrent_connections_are_counted_per_address() {
        let s = setup(2, 0, 0, 0, MAX_CLIENTS);
        let (a1, r) = s.anvil.connect(ip("192.0.2.1"));
        assert_eq!(r, None);
        let (_a2, r) = s.anvil.connect(ip("192.0.2.1"));
        assert_eq!(r, None);
        let (a3, r) = s.anvil.connect(ip("192.0.2.1"));
        assert_eq!(r, Some(Exceeded::Count(3)), "the third is over");
        let (_b1, r) = s.anvil.connect(ip("192.0.2.2"));
        assert_eq!(r, None, "another address has its own count");
        // An IPv4-mapped IPv6 address is the same client.
        let (mapped, r) = s.anvil.connect(ip("::ffff:192.0.2.1"));
        assert_eq!(r, Some(Exceeded::Count(4)));
        drop(mapped);
        drop(a3);
        drop(a1);
        let (_a4, r) = s.anvil.connect(ip("192.0.2.1"));
        assert_eq!(r, None, "closed connections give their place back");
    }

    #[test]
    fn clients_are_counted_by_network_block() {
        // (IPv4 prefix, IPv6 prefix, first address, second address, one client)
        let table = [
            (32, 84, "192.0.2.1", "192.0.2.2", false),
            (24, 84, "192.0.2.1", "192.0.2.200", true),
            (24, 84, "192.0.2.1", "192.0.3.1", false),
            (0, 84, "192.0.2.1", "203.0.113.1", true),
            (32, 84, "2001:db8::1", "2001:db8::fff:ffff:ffff", true),
            (32, 84, "2001:db8::1", "2001:db8:0:0:1000::1", false),
            (32, 128, "2001:db8::1", "2001:db8::2", false),
            (32, 84, "192.0.2.1", "::ffff:192.0.2.1", true),
        ];
        for (v4, v6, first, second, same) in table {
            let mut s = setup(1, 0, 0, 0, MAX_CLIENTS);
            let anvil = Arc::get_mut(&mut s.anvil).unwrap();
            anvil.limits.ipv4_prefix = v4;
            anvil.limits.ipv6_prefix = v6;
            let (_a, _) = s.anvil.connect(ip(first));
            let (_b, r) = s.anvil.connect(ip(second));
            assert_eq!(r.is_some(), same, "{first} {second} /{v4} /{v6}");
        }
    }

    #[test]
    fn connection_rate_opens_a_new_window_after_the_unit() {
        let s = setup(0, 3, 0, 0, MAX_CLIENTS);
        for n in 1..=3 {
            let (_t, r) = s.anvil.connect(ip("192.0.2.1"));
            assert_eq!(r, None, "connection {n}");
        }
        let (_t, r) = s.anvil.connect(ip("192.0.2.1"));
        assert_eq!(r, Some(Exceeded::Rate(4)));
        s.advance(Duration::from_secs(60));
        let (_t, r) = s.anvil.connect(ip("192.0.2.1"));
        assert_eq!(r, Some(Exceeded::Rate(5)), "the unit has not passed yet");
        s.advance(Duration::from_secs(1));
        let (_t, r) = s.anvil.connect(ip("192.0.2.1"));
        assert_eq!(r, None, "a new window");
    }

    #[test]
    fn message_and_recipient_rates() {
        // (message limit, recipient limit, MAILs, RCPTs, first refused MAIL, first refused RCPT)
        let table = [
            (2, 0, 4, 4, Some(3), None),
            (0, 3, 4, 5, None, Some(4)),
            (1, 1, 1, 1, None, None),
            (0, 0, 100, 100, None, None),
        ];
        for (mail, rcpt, mails, rcpts, mail_refused, rcpt_refused) in table {
            let s = setup(0, 0, mail, rcpt, MAX_CLIENTS);
            let (t, _) = s.anvil.connect(ip("2001:db8::1"));
            let first = |f: &dyn Fn() -> Option<u32>, n: u32| (1..=n).find(|_| f().is_some());
            assert_eq!(first(&|| t.mail(), mails), mail_refused, "{mail}/{rcpt}");
            assert_eq!(first(&|| t.rcpt(), rcpts), rcpt_refused, "{mail}/{rcpt}");
        }
        // The window is the client's, across its connections, and ends after the unit.
        let s = setup(0, 0, 2, 0, MAX_CLIENTS);
        let (t, _) = s.anvil.connect(ip("192.0.2.9"));
        assert_eq!((t.mail(), t.mail()), (None, None));
        drop(t);
        let (t, _) = s.anvil.connect(ip("192.0.2.9"));
        assert_eq!(t.mail(), Some(3));
        s.advance(Duration::from_secs(61));
        assert_eq!(t.mail(), None);
    }

    #[test]
    fn idle_clients_are_forgotten_and_the_table_is_capped() {
        let s = setup(0, 0, 0, 0, 10);
        let held: Vec<Ticket> = (0..5)
            .map(|n| s.anvil.connect(ip(&format!("192.0.2.{n}"))).0)
            .collect();
        for n in 0..20 {
            drop(s.anvil.connect(ip(&format!("198.51.100.{n}"))).0);
        }
        assert!(s.anvil.clients() <= 10, "never more than the cap");
        // Clients with a connection open were kept: their counts still hold.
        {
            let table = s.anvil.lock();
            for n in 0..5 {
                let entry = &table.clients[&ip(&format!("192.0.2.{n}"))];
                assert_eq!(entry.count, 1);
            }
        }
        s.advance(Duration::from_secs(61));
        drop(s.anvil.connect(ip("203.0.113.1")).0);
        assert_eq!(
            s.anvil.clients(),
            6,
            "the idle ones expired a unit after their last disconnect"
        );
        drop(held);
        s.advance(Duration::from_secs(61));
        drop(s.anvil.connect(ip("203.0.113.2")).0);
        assert_eq!(s.anvil.clients(), 1);
    }
}
