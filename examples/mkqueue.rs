//! Benchmark support, not a user command: fills a queue directory with N messages in
//! the queue file format, as `sendmail -odq` would leave them (without the fsyncs).
//!
//! `cargo run --release --example mkqueue -- QUEUE_DIR COUNT [QUEUE]`
//! (QUEUE: maildrop, incoming, active, deferred or hold; default hold)
#![doc(hidden)]

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::process::ExitCode;

use mailroom::queue::{Envelope, Queue, QueueId, QueueName, Recipient};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(dir), Some(count)) = (
        args.first(),
        args.get(1).and_then(|n| n.parse::<u64>().ok()),
    ) else {
        eprintln!("usage: mkqueue QUEUE_DIR COUNT [QUEUE]");
        return ExitCode::from(64);
    };
    let Some(target) = QueueName::parse(args.get(2).map(String::as_str).unwrap_or("hold")) else {
        eprintln!("mkqueue: unknown queue");
        return ExitCode::from(64);
    };
    match fill(&Queue::new(dir), count, target) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mkqueue: {e}");
            ExitCode::from(75)
        }
    }
}

fn fill(queue: &Queue, count: u64, target: QueueName) -> std::io::Result<()> {
    queue.ensure_dirs()?;
    let dir = queue.dir(target);
    let body = "line of a two kilobyte message body padding padding padding padding\n".repeat(30);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    for i in 0..count {
        let id = QueueId::generate();
        let mut env = Envelope::new(id, now, 0, "bench@example.org");
        env.recipients.push(Recipient::new(
            "benchu",
            &format!("benchu{}@localhost", i % 7),
        ));
        let message =
            format!("Received: id {id}\nFrom: bench@example.org\nSubject: holdme\n\n{body}");
        env.size = message.len() as u64;
        // A real submission goes through NewQueueFile, which fsyncs every file; a
        // benchmark fixture need not, so it writes the same format straight into place.
        let mut bytes = env.serialize();
        bytes.extend_from_slice(message.as_bytes());
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.join(id.as_str()))?;
        file.write_all(&bytes)?;
    }
    Ok(())
}
