//! Links GCC's unwinder statically, so that no program of ours loads `libgcc_s.so.1`.
//!
//! Why: `sendmail` is started once per message, and on x86-64 `libgcc_s`'s constructor
//! (`__cpu_indicator_init`) runs a series of `cpuid` instructions. Under a hypervisor each
//! `cpuid` traps, and loading and relocating the library costs the rest: together about
//! 0.17 ms of a 1 ms process start on the benchmark machine (see the README's
//! Performance section). Rust's standard library needs only the unwinder from it
//! (`_Unwind_*`, for panics and backtraces), and GCC ships the same code as the static
//! archive `libgcc_eh.a`, which is what `gcc -static-libgcc` links.
//!
//! How: the archive is linked whole, ahead of the `-lgcc_s` that std asks for; rustc
//! links with `--as-needed`, so the shared library then satisfies nothing and is not
//! recorded. glibc stays dynamic (NSS modules such as sssd or LDAP keep working).
//!
//! Only for a native Linux/glibc build with a dynamically linked C runtime, and only when
//! the C compiler can name the archive; anything else links exactly as before.
use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CC");
    // Set when the unwinder is linked statically; tests/linking.rs then checks the result.
    println!("cargo:rustc-check-cfg=cfg(static_unwinder)");
    let var = |name: &str| env::var(name).unwrap_or_default();
    let native = var("TARGET") == var("HOST");
    let linux_gnu = var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu";
    let static_crt = var("CARGO_CFG_TARGET_FEATURE")
        .split(',')
        .any(|f| f == "crt-static");
    if !(native && linux_gnu) || static_crt {
        return;
    }
    if let Some(archive) = libgcc_eh() {
        // A compiler upgrade moves the archive (gcc/x86_64-linux-gnu/12 → 13): look
        // again then, rather than link against a path that is gone.
        println!("cargo:rerun-if-changed={}", archive.display());
        println!(
            "cargo:rustc-link-arg=-Wl,--push-state,--whole-archive,{},--pop-state",
            archive.display()
        );
        println!("cargo:rustc-cfg=static_unwinder");
    }
}

/// The C compiler's own `libgcc_eh.a`: `cc -print-file-name` prints the full path of a
/// file it would link, or just the name when it has none.
fn libgcc_eh() -> Option<PathBuf> {
    let cc = env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let out = Command::new(cc)
        .arg("-print-file-name=libgcc_eh.a")
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    (out.status.success()
        && path.is_absolute()
        && path.is_file()
        && !path.as_os_str().to_string_lossy().contains(','))
    .then_some(path)
}
