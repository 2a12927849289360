//! How the programs are linked (see build.rs): with GCC's unwinder linked in, none of
//! them loads `libgcc_s.so.1`, and a panic still unwinds, runs destructors on its way
//! and is caught where the code catches it (DKIM signing relies on that).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

const PROGRAMS: [&str; 6] = [
    env!("CARGO_BIN_EXE_sendmail"),
    env!("CARGO_BIN_EXE_mailq"),
    env!("CARGO_BIN_EXE_postsuper"),
    env!("CARGO_BIN_EXE_newaliases"),
    env!("CARGO_BIN_EXE_mail"),
    env!("CARGO_BIN_EXE_mailroom"),
];

#[test]
fn no_program_loads_libgcc_s() {
    if !cfg!(static_unwinder) {
        eprintln!("not checked: this build has no libgcc_eh.a to link (see build.rs)");
        return;
    }
    for program in PROGRAMS {
        // ldd (glibc's libc-bin) lists what the dynamic loader maps for the program.
        let out = Command::new("ldd").arg(program).output().expect("run ldd");
        let libs = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "ldd {program}: {libs}");
        assert!(
            libs.contains("libc.so.6"),
            "{program} links glibc dynamically: {libs}"
        );
        assert!(
            !libs.contains("libgcc_s"),
            "{program} loads libgcc_s: {libs}"
        );
    }
}

#[test]
fn a_panic_unwinds_through_destructors_and_is_caught() {
    static DROPPED: AtomicBool = AtomicBool::new(false);
    struct Guard;
    impl Drop for Guard {
        fn drop(&mut self) {
            DROPPED.store(true, Ordering::SeqCst);
        }
    }
    let caught = catch_unwind(AssertUnwindSafe(|| {
        let _guard = Guard;
        let depth: u32 = std::hint::black_box(3);
        fn recurse(n: u32) -> u32 {
            if n == 0 {
                panic!("deliberate panic at the bottom of the stack");
            }
            recurse(n - 1) + 1
        }
        recurse(depth)
    }));
    assert!(caught.is_err(), "the panic was caught");
    assert!(
        DROPPED.load(Ordering::SeqCst),
        "the guard's destructor ran while unwinding"
    );
    let backtrace = std::backtrace::Backtrace::force_capture();
    assert!(
        format!("{backtrace}").contains("a_panic_unwinds"),
        "the unwinder walks this test's frames: {backtrace}"
    );
}
