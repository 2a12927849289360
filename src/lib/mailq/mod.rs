//! Listing the queue: `mailq`, `sendmail -bp` and `mailq -j`. Postfix's layout byte for
//! byte (see [`format`]), oldest message first across all queues.
//!
//! Only envelopes are read, never bodies. Memory stays flat in the size of the queue
//! except for the sorted ID list (eight bytes a message, [`Listing`]): envelopes are read and
//! rendered in chunks, by worker threads when the queue is large enough for that to
//! pay, and the chunks are written in order as they complete, with at most a few in
//! flight per worker.

pub mod format;

use std::path::PathBuf;

use std::fs::File;
use std::io::{self, Write};
use std::sync::mpsc;

use crate::config::Config;
use crate::queue::read_envelope_view;
use crate::queue::{Listing, Queue};
use crate::queue::{QueueDirs, QueueId, QueueName, ReadError};
use crate::sysexits::{Error, Result};

// `mailq`'s command line, here rather than in the binary so that `mailroom completions`
// can generate its shell completions.
/// List the mail queue.
#[derive(clap::Parser)]
#[command(name = "mailq", version, disable_help_flag = false)]
pub struct Args {
    /// Configuration directory (default: $MAIL_CONFIG, else /etc/mailroom).
    #[arg(short = 'C', value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
    /// One JSON object per message, as `postqueue -j`.
    #[arg(short = 'j', long = "json")]
    pub json: bool,
    /// Accepted for compatibility; changes nothing.
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// Messages per chunk: big enough to amortise the hand-off between threads, small
/// enough that output starts at once and buffers stay small.
const CHUNK: usize = 128;
/// Rendered chunks a worker may have waiting before it blocks.
const IN_FLIGHT: usize = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Postfix's `mailq` layout.
    Text,
    /// One `postqueue -j` object per line.
    Json,
}

impl Format {
    /// About what a message to one recipient takes (text: about 130 bytes, JSON: about
    /// 220), so that a chunk's buffer is allocated once, not doubled on its last lines.
    fn bytes_per_message(self) -> usize {
        match self {
            Format::Text => 160,
            Format::Json => 256,
        }
    }
}

/// Counts of what was listed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub messages: u64,
    pub bytes: u64,
}

/// One chunk's output, rendered by a worker.
#[derive(Default)]
struct Rendered {
    text: Vec<u8>,
    warnings: Vec<String>,
    totals: Totals,
}

/// Lists every message in `queue` on `out` in the given format. Files that cannot be
/// read are reported through `warn` (one line each, without a prefix) and skipped;
/// files that vanished meanwhile (delivered) are skipped silently. A reader that goes
/// away (`mailq | head -1`) ends the listing quietly: that is `Ok`.
pub fn list(
    queue: &Queue,
    format: Format,
    out: &mut dyn Write,
    warn: &mut dyn FnMut(&str),
) -> Result<Totals> {
    match list_inner(queue, format, out, warn) {
        Err(ListError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => Ok(Totals::default()),
        Err(ListError::Output(e)) => Err(Error::io("write standard output", &e)),
        Err(ListError::Queue(e)) => Err(e),
        Ok(totals) => Ok(totals),
    }
}

enum ListError {
    Output(io::Error),
    Queue(Error),
}

fn list_inner(
    queue: &Queue,
    format: Format,
    out: &mut dyn Write,
    warn: &mut dyn FnMut(&str),
) -> std::result::Result<Totals, ListError> {
    let root = queue.root().display();
    let ids = queue
        .listing(&QueueName::MAIL)
        .map_err(|e| ListError::Queue(Error::io(format!("scan queue {root}"), &e)))?;
    let dirs = QueueDirs::open(queue)
        .map_err(|e| ListError::Queue(Error::io(format!("open queue {root}"), &e)))?;

    let mut totals = Totals::default();
    let mut emit = |chunk: Rendered| -> io::Result<()> {
        for w in &chunk.warnings {
            warn(w);
        }
        if chunk.totals.messages > 0 && totals.messages == 0 && format == Format::Text {
            out.write_all(format::HEADING.as_bytes())?;
        }
        out.write_all(&chunk.text)?;
        totals.messages += chunk.totals.messages;
        totals.bytes += chunk.totals.bytes;
        Ok(())
    };

    let chunks: Vec<&[u64]> = ids.chunks(CHUNK).collect();
    let workers = reader_threads(chunks.len());
    if workers == 1 {
        let mut worker = Worker::new(&dirs, format);
        for chunk in &chunks {
            emit(worker.render(chunk)).map_err(ListError::Output)?;
        }
    } else {
        std::thread::scope(|scope| -> io::Result<()> {
            let mut receivers = Vec::with_capacity(workers);
            for w in 0..workers {
                let (tx, rx) = mpsc::sync_channel::<Rendered>(IN_FLIGHT);
                receivers.push(rx);
                let (dirs, chunks) = (&dirs, &chunks);
                scope.spawn(move || {
                    let mut worker = Worker::new(dirs, format);
                    for chunk in chunks.iter().skip(w).step_by(workers) {
                        // The receiver is gone when output failed: stop quietly.
                        if tx.send(worker.render(chunk)).is_err() {
                            return;
                        }
                    }
                });
            }
            // Chunk k comes from worker k % workers; taking them round-robin restores
            // the order. Returning early drops the receivers, which stops the workers.
            for k in 0..chunks.len() {
                match receivers[k % workers].recv() {
                    Ok(chunk) => emit(chunk)?,
                    Err(_) => break,
                }
            }
            Ok(())
        })
        .map_err(ListError::Output)?;
    }

    let tail = match format {
        Format::Text if totals.messages == 0 => format::EMPTY.to_string(),
        Format::Text => format::summary(totals.messages, totals.bytes),
        Format::Json => String::new(),
    };
    out.write_all(tail.as_bytes()).map_err(ListError::Output)?;
    out.flush().map_err(ListError::Output)?;
    Ok(totals)
}

/// Per-thread state: a reused read buffer and the time cache.
struct Worker<'a> {
    dirs: &'a QueueDirs,
    format: Format,
    buf: Vec<u8>,
    clock: format::Clock,
}

impl<'a> Worker<'a> {
    fn new(dirs: &'a QueueDirs, format: Format) -> Worker<'a> {
        Worker {
            dirs,
            format,
            buf: Vec::with_capacity(8192),
            clock: format::Clock::default(),
        }
    }

    fn render(&mut self, chunk: &[u64]) -> Rendered {
        let mut done = Rendered {
            text: Vec::with_capacity(chunk.len() * self.format.bytes_per_message()),
            ..Rendered::default()
        };
        for &packed in chunk {
            let (id, queue) = Listing::unpack(packed);
            let Some((queue, mut file)) = self.open(id, queue, &mut done.warnings) else {
                continue;
            };
            let env = match read_envelope_view(&mut file, &mut self.buf) {
                Ok(env) => env,
                Err(err) => {
                    done.warnings.push(warning(queue, id, err));
                    continue;
                }
            };
            match self.format {
                Format::Text => format::text(&mut done.text, id, queue, &env, &mut self.clock),
                Format::Json => format::json(&mut done.text, id, queue, &env),
            }
            done.totals.messages += 1;
            done.totals.bytes += env.size;
        }
        done
    }

    /// Opens one message's file. A file that vanished was usually moved on by the daemon
    /// (maildrop → incoming → active → deferred) between the directory scan and now, so
    /// the other queues are tried before it is taken as delivered: a message is listed
    /// from submission until delivery.
    fn open(
        &self,
        id: QueueId,
        listed_in: QueueName,
        warnings: &mut Vec<String>,
    ) -> Option<(QueueName, File)> {
        let others = QueueName::MAIL.into_iter().filter(|&q| q != listed_in);
        for queue in std::iter::once(listed_in).chain(others) {
            match self.dirs.open_envelope(queue, id) {
                Ok(file) => return Some((queue, file)),
                Err(ReadError::Missing) => continue,
                Err(err) => {
                    warnings.push(warning(queue, id, err));
                    return None;
                }
            }
        }
        None
    }
}

/// The line for a queue file that cannot be listed.
fn warning(queue: QueueName, id: QueueId, err: ReadError) -> String {
    match err {
        ReadError::Corrupt(why) => {
            format!(
                "{}/{id}: corrupt queue file, skipped: {why}",
                queue.as_str()
            )
        }
        err => format!("{}/{id}: {err}, skipped", queue.as_str()),
    }
}

/// `mailq` and `sendmail -bp`: checks that the caller may list the queue
/// (`authorized_mailq_users`), then lists it on `out` (the same bytes from either
/// command), warnings as `mailq: warning: ...` on stderr. A closed pipe is success.
pub fn run(config: &Config, json: bool, out: &mut dyn Write) -> Result<()> {
    run_as(config, "mailq", json, out)
}

/// [`run`], with warnings prefixed by `program` (e.g. `sendmail`).
pub fn run_as(config: &Config, program: &str, json: bool, out: &mut dyn Write) -> Result<()> {
    let users = config.list("authorized_mailq_users")?;
    let uid = nix::unistd::getuid();
    let name = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name);
    if !authorized(&users, uid.as_raw(), name.as_deref()) {
        return Err(Error::perm(format!(
            "User {}({uid}) is not allowed to view the mail queue",
            name.as_deref().unwrap_or("unknown")
        )));
    }
    let queue = Queue::from_config(config)?;
    let format = if json { Format::Json } else { Format::Text };
    let stderr = io::stderr();
    let mut warn = |text: &str| {
        let line = format!("{program}: warning: {text}\n");
        let _ = stderr.lock().write_all(line.as_bytes());
    };
    list(&queue, format, out, &mut warn).map(drop)
}

/// Whether the user may list the queue (`authorized_mailq_users`): root always; anyone
/// when the list says `static:anyone` (the default); else the user names in the list,
/// where `!name` refuses and the first match decides.
pub fn authorized(list: &[String], uid: u32, user: Option<&str>) -> bool {
    if uid == 0 {
        return true;
    }
    for item in list {
        if item == "static:anyone" {
            return true;
        }
        let (allow, name) = match item.strip_prefix('!') {
            Some(name) => (false, name),
            None => (true, item.as_str()),
        };
        if user == Some(name) {
            return allow;
        }
    }
    false
}

/// Threads to read `chunks` chunks of envelopes with: two per CPU, at most 8, never more
/// than there are chunks; one when there is a single chunk, where threads only cost.
///
/// More threads than CPUs: on a cold cache the time goes in waiting for the disk, and
/// threads overlap those waits. 10,000 held messages after `drop_caches`, on 2 CPUs:
/// 1 thread 780 ms, 2: 440 ms, 4: 300 ms, 8: 210 ms. Not more: each thread keeps up to
/// two rendered chunks in flight, and at 8 threads on 2 CPUs the peak RSS of a 50,000
/// listing was 1.3 times that of a 1,000 one (4: 1.16 to 1.19; 2: 1.12).
pub fn reader_threads(chunks: usize) -> usize {
    if chunks < 2 {
        return 1;
    }
    std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
        .saturating_mul(2)
        .clamp(1, 8)
        .min(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_threads_stay_within_the_chunks_and_eight() {
        assert_eq!(reader_threads(0), 1);
        assert_eq!(reader_threads(1), 1);
        for chunks in [2, 3, 7, 8, 9, 400] {
            let n = reader_threads(chunks);
            assert!((1..=8).contains(&n) && n <= chunks, "{chunks} chunks: {n}");
        }
        assert_eq!(reader_threads(2), 2, "2 per CPU: at least 2 on any machine");
    }

    #[test]
    fn who_may_list() {
        let anyone = vec!["static:anyone".to_string()];
        assert!(authorized(&anyone, 1000, Some("bob")));
        let some = vec!["alice".to_string(), "!bob".to_string(), "bob".to_string()];
        assert!(authorized(&some, 1000, Some("alice")));
        assert!(!authorized(&some, 1001, Some("bob")));
        assert!(!authorized(&some, 1002, Some("carol")));
        assert!(!authorized(&some, 1003, None));
        assert!(authorized(&[], 0, Some("root")));
    }
}

#[cfg(test)]
mod listing_tests {
    use super::*;
    use crate::queue::{Envelope, Recipient};

    /// Writes `n` messages straight into `queue` (no fsync: a fixture).
    fn fill(root: &std::path::Path, n: usize) -> Vec<QueueId> {
        let queue = Queue::new(root);
        queue.ensure_dirs().unwrap();
        let queues = [QueueName::Maildrop, QueueName::Deferred, QueueName::Hold];
        (0..n)
            .map(|i| {
                let id = QueueId::generate();
                let mut env = Envelope::new(id, 1_795_561_017_000_000, 0, "s@x");
                env.recipients.push(Recipient::new("r", &format!("r{i}@x")));
                env.size = 1000;
                let q = queues[i % queues.len()];
                std::fs::write(queue.path(q, id), env.serialize()).unwrap();
                id
            })
            .collect()
    }

    #[test]
    fn parallel_chunks_come_out_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let ids = fill(tmp.path(), CHUNK * 4 + 7);
        let queue = Queue::new(tmp.path());
        let mut out = Vec::new();
        let totals = list(&queue, Format::Json, &mut out, &mut |w| panic!("{w}")).unwrap();
        assert_eq!(totals.messages as usize, ids.len());
        let text = String::from_utf8(out).unwrap();
        let listed: Vec<String> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["queue_id"].as_str().unwrap().to_string()
            })
            .collect();
        let expected: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        assert_eq!(listed, expected);
        let mut out = Vec::new();
        list(&queue, Format::Text, &mut out, &mut |w| panic!("{w}")).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches(format::HEADING).count(), 1);
        assert!(text.ends_with(&format::summary(ids.len() as u64, ids.len() as u64 * 1000)));
    }

    /// A writer that fails like a closed pipe after some bytes.
    struct ClosedPipe(usize);

    impl Write for ClosedPipe {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            let n = buf.len().min(self.0);
            self.0 -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_closed_pipe_is_success() {
        let tmp = tempfile::tempdir().unwrap();
        fill(tmp.path(), CHUNK * 3);
        let queue = Queue::new(tmp.path());
        let got = list(&queue, Format::Text, &mut ClosedPipe(100), &mut |_| {});
        assert!(got.is_ok());
    }
}
