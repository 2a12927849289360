//! `mailroom queue`: the shape of the queue, as Postfix's `qshape` prints it — for each
//! recipient domain (or sender domain), how many messages are how old, in buckets whose
//! width doubles (`5 10 20 40 ... 1280 1280+` minutes), busiest domains first, under a
//! `TOTAL` row.
//!
//! Only envelopes are read, through the same descriptor-relative reader as `mailq`
//! ([`QueueDirs`]), by several threads when the queue is large; each thread counts into a
//! table of its own and the tables are added up at the end, so no order has to be kept
//! and memory grows with the number of domains, not of messages.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::queue::{EnvelopeView, Queue, QueueDirs, QueueId, QueueName, ReadError};
use crate::sysexits::{Error, Result};

/// qshape's defaults: 10 buckets, the first 5 minutes wide.
pub const DEFAULT_BUCKET_MINUTES: u64 = 5;
pub const DEFAULT_BUCKETS: usize = 10;
/// Messages per work unit handed to a thread.
const CHUNK: usize = 1024;

/// What to count.
#[derive(Debug, Clone)]
pub struct Options {
    pub queues: Vec<QueueName>,
    /// Sender domains instead of recipient domains (`-s`).
    pub senders: bool,
    /// Width of the first bucket, in minutes (`-t`).
    pub bucket_minutes: u64,
    /// Number of buckets, the last open-ended (`-b`).
    pub buckets: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            queues: DEFAULT_QUEUES.to_vec(),
            senders: false,
            bucket_minutes: DEFAULT_BUCKET_MINUTES,
            buckets: DEFAULT_BUCKETS,
        }
    }
}

/// qshape looks at `incoming` and `active` unless told otherwise; ours adds `maildrop`,
/// which can hold mail for long here (`sendmail -odq`, no daemon running), as
/// `postsuper` does. `deferred` and `hold` are asked for by name.
pub const DEFAULT_QUEUES: [QueueName; 3] =
    [QueueName::Maildrop, QueueName::Incoming, QueueName::Active];

/// Counts per age bucket of one row.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Row {
    pub total: u64,
    pub counts: Vec<u64>,
}

impl Row {
    fn new(buckets: usize) -> Row {
        Row {
            total: 0,
            counts: vec![0; buckets],
        }
    }

    fn add(&mut self, bucket: usize) {
        self.total += 1;
        self.counts[bucket] += 1;
    }

    fn merge(&mut self, other: &Row) {
        self.total += other.total;
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }
}

/// The counted queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// Bucket labels: `5`, `10`, ..., `1280+`.
    pub labels: Vec<String>,
    pub total: Row,
    /// Domains, most messages first (ties by name).
    pub domains: Vec<(String, Row)>,
}

/// The bucket upper bounds in minutes (exclusive); the last bucket has none.
fn bounds(options: &Options) -> Vec<u64> {
    let first = options.bucket_minutes.max(1);
    (0..options.buckets.max(2) - 1)
        .map(|i| first.saturating_mul(1u64 << i.min(62)))
        .collect()
}

/// Column labels for `options`.
pub fn labels(options: &Options) -> Vec<String> {
    let bounds = bounds(options);
    let mut labels: Vec<String> = bounds.iter().map(u64::to_string).collect();
    labels.push(format!("{}+", bounds.last().copied().unwrap_or(0)));
    labels
}

/// The bucket of a message `age_secs` old.
fn bucket(bounds: &[u64], age_secs: u64) -> usize {
    let minutes = age_secs / 60;
    bounds
        .iter()
        .position(|&b| minutes < b)
        .unwrap_or(bounds.len())
}

/// The domain a row is counted under: the part after the last `@`, lowercased; the null
/// sender is `MAILER-DAEMON`, as in qshape.
fn domain_of(address: &str) -> String {
    if address.is_empty() {
        return "MAILER-DAEMON".to_string();
    }
    match address.rsplit_once('@') {
        Some((_, domain)) if !domain.is_empty() => domain.to_ascii_lowercase(),
        _ => address.to_ascii_lowercase(),
    }
}

/// One thread's counts.
struct Tally {
    bounds: Vec<u64>,
    total: Row,
    rows: HashMap<String, Row>,
    warnings: Vec<String>,
}

impl Tally {
    fn new(bounds: Vec<u64>) -> Tally {
        let n = bounds.len() + 1;
        Tally {
            bounds,
            total: Row::new(n),
            rows: HashMap::new(),
            warnings: Vec::new(),
        }
    }

    fn count(&mut self, env: &EnvelopeView<'_>, now: u64, senders: bool) {
        let age = now.saturating_sub(env.arrival_micros / 1_000_000);
        let b = bucket(&self.bounds, age);
        let n = self.bounds.len() + 1;
        let mut add = |domain: String| {
            self.total.add(b);
            self.rows
                .entry(domain)
                .or_insert_with(|| Row::new(n))
                .add(b);
        };
        if senders {
            add(domain_of(&env.sender));
        } else {
            // Recipients already delivered or bounced are no longer waiting.
            for rcpt in env.pending() {
                add(domain_of(&rcpt.address));
            }
        }
    }

    fn merge(&mut self, other: Tally) {
        self.total.merge(&other.total);
        for (domain, row) in other.rows {
            match self.rows.get_mut(&domain) {
                Some(mine) => mine.merge(&row),
                None => {
                    self.rows.insert(domain, row);
                }
            }
        }
        self.warnings.extend(other.warnings);
    }
}

/// Counts the queue. Files that cannot be read are reported through `warn` and left
/// out; files that vanish meanwhile (delivered) are left out silently.
pub fn measure(
    queue: &Queue,
    options: &Options,
    now: u64,
    warn: &mut dyn FnMut(&str),
) -> Result<Shape> {
    let root = queue.root().display();
    let ids = queue
        .list(&options.queues)
        .map_err(|e| Error::io(format!("scan queue {root}"), &e))?;
    let dirs = QueueDirs::open(queue).map_err(|e| Error::io(format!("open queue {root}"), &e))?;
    let bounds = bounds(options);
    let chunks: Vec<&[(QueueId, QueueName)]> = ids.chunks(CHUNK).collect();
    let workers = crate::mailq::reader_threads(chunks.len());
    let count_chunks = |skip: usize| -> Tally {
        let mut tally = Tally::new(bounds.clone());
        let mut buf = Vec::with_capacity(8192);
        for chunk in chunks.iter().skip(skip).step_by(workers) {
            for &(id, name) in *chunk {
                match dirs.read_envelope(name, id, &mut buf) {
                    Ok(env) => tally.count(&env, now, options.senders),
                    Err(ReadError::Missing) => {}
                    Err(err) => tally
                        .warnings
                        .push(format!("{}/{id}: {err}, skipped", name.as_str())),
                }
            }
        }
        tally
    };
    let mut tally = if workers == 1 {
        count_chunks(0)
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|w| scope.spawn(move || count_chunks(w)))
                .collect();
            let mut all = Tally::new(bounds.clone());
            for handle in handles {
                match handle.join() {
                    Ok(t) => all.merge(t),
                    Err(_) => all.warnings.push("a counting thread failed".into()),
                }
            }
            all
        })
    };
    tally.warnings.sort();
    for w in &tally.warnings {
        warn(w);
    }
    let mut domains: Vec<(String, Row)> = tally.rows.into_iter().collect();
    domains.sort_by(|a, b| b.1.total.cmp(&a.1.total).then_with(|| a.0.cmp(&b.0)));
    Ok(Shape {
        labels: labels(options),
        total: tally.total,
        domains,
    })
}

/// qshape's table: a header of bucket labels under `T`, the `TOTAL` row, then at most
/// `limit` domains. Columns are right-aligned, each as wide as its widest entry (at least
/// two), the domain column as wide as the longest name shown.
pub fn render_text(shape: &Shape, limit: Option<usize>) -> String {
    let shown: Vec<&(String, Row)> = shape
        .domains
        .iter()
        .take(limit.unwrap_or(usize::MAX))
        .collect();
    let mut rows: Vec<(&str, &Row)> = vec![("TOTAL", &shape.total)];
    rows.extend(shown.iter().map(|(d, r)| (d.as_str(), r)));
    let mut headers = vec!["T".to_string()];
    headers.extend(shape.labels.iter().cloned());
    let cells = |row: &Row| -> Vec<String> {
        std::iter::once(row.total)
            .chain(row.counts.iter().copied())
            .map(|n| n.to_string())
            .collect()
    };
    let table: Vec<Vec<String>> = rows.iter().map(|(_, r)| cells(r)).collect();
    let widths: Vec<usize> = (0..headers.len())
        .map(|c| {
            table
                .iter()
                .map(|cells| cells[c].len())
                .chain([headers[c].len(), 2])
                .max()
                .unwrap_or(2)
        })
        .collect();
    let name_width = rows.iter().map(|(d, _)| d.len()).max().unwrap_or(5);
    let line = |name: &str, cells: &[String]| -> String {
        let mut out = format!("{name:>name_width$}");
        for (cell, width) in cells.iter().zip(&widths) {
            out.push_str(&format!(" {cell:>width$}"));
        }
        out.push('\n');
        out
    };
    let mut out = line("", &headers);
    for ((name, _), cells) in rows.iter().zip(&table) {
        out.push_str(&line(name, cells));
    }
    out
}

/// The same as JSON: `{"queues": [...], "buckets": [...], "total": {...}, "domains": [...]}`.
pub fn render_json(shape: &Shape, options: &Options, limit: Option<usize>) -> String {
    let row = |r: &Row| serde_json::json!({"total": r.total, "counts": r.counts});
    let domains: Vec<serde_json::Value> = shape
        .domains
        .iter()
        .take(limit.unwrap_or(usize::MAX))
        .map(|(d, r)| {
            let mut v = row(r);
            v["domain"] = serde_json::Value::String(d.clone());
            v
        })
        .collect();
    let queues: Vec<&str> = options.queues.iter().map(|q| q.as_str()).collect();
    serde_json::json!({
        "queues": queues,
        "by": if options.senders { "sender" } else { "recipient" },
        "buckets": shape.labels,
        "total": row(&shape.total),
        "domains": domains,
    })
    .to_string()
        + "\n"
}

/// Seconds since the epoch now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{Envelope, Recipient};

    const NOW: u64 = 1_800_000_000;

    fn put(queue: &Queue, q: QueueName, minutes_old: u64, sender: &str, rcpts: &[&str]) {
        let arrival = (NOW - minutes_old * 60) * 1_000_000;
        let mut env = Envelope::new(QueueId::generate(), arrival, 0, sender);
        for r in rcpts {
            env.recipients.push(Recipient::new(r, r));
        }
        std::fs::write(queue.path(q, env.id), env.serialize()).unwrap();
    }

    #[test]
    fn buckets_double_from_the_first() {
        let o = Options::default();
        assert_eq!(
            labels(&o),
            [
                "5", "10", "20", "40", "80", "160", "320", "640", "1280", "1280+"
            ]
        );
        let b = bounds(&o);
        assert_eq!(bucket(&b, 0), 0);
        assert_eq!(bucket(&b, 299), 0);
        assert_eq!(bucket(&b, 300), 1);
        assert_eq!(bucket(&b, 1279 * 60), 8);
        assert_eq!(bucket(&b, 1280 * 60), 9);
        assert_eq!(bucket(&b, u64::MAX), 9);
    }

    #[test]
    fn counts_recipients_by_domain_and_age() {
        let tmp = tempfile::tempdir().unwrap();
        let queue = Queue::new(tmp.path());
        queue.ensure_dirs().unwrap();
        put(
            &queue,
            QueueName::Deferred,
            1,
            "a@x.org",
            &["u@Example.COM", "v@example.com"],
        );
        put(&queue, QueueName::Deferred, 30, "", &["w@other.net"]);
        put(
            &queue,
            QueueName::Deferred,
            5000,
            "b@x.org",
            &["z@example.com"],
        );
        put(&queue, QueueName::Hold, 1, "b@x.org", &["h@held.org"]);
        let options = Options {
            queues: vec![QueueName::Deferred],
            ..Options::default()
        };
        let shape = measure(&queue, &options, NOW, &mut |w| panic!("{w}")).unwrap();
        assert_eq!(shape.total.total, 4);
        assert_eq!(shape.domains[0].0, "example.com");
        assert_eq!(shape.domains[0].1.counts, [2, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(shape.domains[1].0, "other.net");
        assert_eq!(shape.domains[1].1.counts[3], 1);
        let text = render_text(&shape, None);
        assert_eq!(
            text,
            "             T  5 10 20 40 80 160 320 640 1280 1280+\n\
             \x20     TOTAL  4  2  0  0  1  0   0   0   0    0     1\n\
             example.com  3  2  0  0  0  0   0   0   0    0     1\n\
             \x20 other.net  1  0  0  0  1  0   0   0   0    0     0\n"
        );
        let senders = Options {
            senders: true,
            ..options.clone()
        };
        let shape = measure(&queue, &senders, NOW, &mut |_| {}).unwrap();
        let names: Vec<&str> = shape.domains.iter().map(|(d, _)| d.as_str()).collect();
        assert_eq!(names, ["x.org", "MAILER-DAEMON"]);
        assert_eq!(render_text(&shape, Some(1)).lines().count(), 3);
        let v: serde_json::Value =
            serde_json::from_str(&render_json(&shape, &senders, None)).unwrap();
        assert_eq!(v["total"]["total"], 3);
        assert_eq!(v["domains"][0]["domain"], "x.org");
    }

    #[test]
    fn many_messages_are_counted_by_several_threads_exactly() {
        let tmp = tempfile::tempdir().unwrap();
        let queue = Queue::new(tmp.path());
        queue.ensure_dirs().unwrap();
        for i in 0..(CHUNK * 3 + 5) as u64 {
            put(
                &queue,
                QueueName::Active,
                i % 100,
                "s@x",
                &[&format!("r@d{}.example", i % 7)],
            );
        }
        std::fs::write(queue.path(QueueName::Active, QueueId::generate()), b"junk").unwrap();
        let mut warnings = Vec::new();
        let shape = measure(&queue, &Options::default(), NOW, &mut |w| {
            warnings.push(w.to_string())
        })
        .unwrap();
        assert_eq!(shape.total.total as usize, CHUNK * 3 + 5);
        assert_eq!(shape.domains.len(), 7);
        assert_eq!(warnings.len(), 1);
        let sum: u64 = shape.domains.iter().map(|(_, r)| r.total).sum();
        assert_eq!(sum, shape.total.total);
    }
}
