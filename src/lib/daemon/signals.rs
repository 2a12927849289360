//! SIGTERM, SIGINT, SIGHUP and SIGUSR1 as messages on the scheduler's channel. The signals are
//! blocked in every thread (the mask is set before any thread starts, and threads inherit
//! it), and one thread takes them with `sigwait`: no code runs in signal-handler context,
//! so nothing has to be async-signal-safe.

use std::sync::mpsc::Sender;

use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};

/// A signal the daemon acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sig {
    /// SIGTERM or SIGINT: stop taking work, finish the deliveries in flight, exit.
    Stop(i32),
    /// SIGHUP: read `main.cf` again.
    Reload,
    /// SIGUSR1: try every deferred message now (`mailroom flush`, like `postqueue -f`).
    Flush,
}

fn handled() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.add(Signal::SIGHUP);
    set.add(Signal::SIGUSR1);
    set
}

/// Blocks the daemon's signals in the calling thread and in every thread it starts
/// afterwards. Call first, before any thread exists.
pub fn block() -> nix::Result<()> {
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&handled()), None)
}

/// Starts the thread that turns signals into `wrap(Sig)` messages on `to`.
pub fn forward<E: Send + 'static>(
    to: Sender<E>,
    wrap: fn(Sig) -> E,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let set = handled();
            loop {
                let sig = match set.wait() {
                    Ok(Signal::SIGHUP) => Sig::Reload,
                    Ok(Signal::SIGUSR1) => Sig::Flush,
                    Ok(other) => Sig::Stop(other as i32),
                    Err(_) => continue,
                };
                if to.send(wrap(sig)).is_err() {
                    return;
                }
            }
        })
}
