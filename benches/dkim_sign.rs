//! What DKIM signing costs per message: `cargo bench --bench dkim_sign [-- N]`.
//!
//! Signs the same message (a typical 3 KB one: eleven signed header fields, a plain-text
//! body) N times (default 2000) with each kind of key `mailroom dkim keygen` makes, as
//! the SMTP client does at each delivery (header scan, relaxed canonicalisation, body
//! hash, signature), and prints a table. No assertion on the figures: they depend on the
//! machine; compare them with the delivery itself (a few milliseconds per message over
//! SMTP on loopback).

use std::time::Instant;

use mailroom::dkim::key::{Algorithm, generate};
use mailroom::dkim::{PrivateKey, Signer};

fn message() -> Vec<u8> {
    let mut m = String::from(
        "Received: from localhost by mx.example.org (mailroom) id 4ABC; Sun, 6 Dec 2026 12:00:00 +0000\r\n\
         From: \"Alice Example\" <alice@example.org>\r\nTo: Bob <bob@remote.example>\r\n\
         Cc: carol@remote.example\r\nSubject: Quarterly report\r\n\
         Date: Sun, 6 Dec 2026 12:00:00 +0000\r\nMessage-ID: <bench@example.org>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Reply-To: alice@example.org\r\nIn-Reply-To: <earlier@remote.example>\r\n\
         References: <earlier@remote.example>\r\n\r\n",
    );
    while m.len() < 3000 {
        m.push_str("The figures for the quarter are attached below, as discussed.  \r\n");
    }
    m.into_bytes()
}

fn main() {
    let rounds: u32 = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000);
    let message = message();
    println!(
        "DKIM signing, {} byte message, {rounds} messages each",
        message.len()
    );
    println!(
        "{:<14} {:>12} {:>14} {:>12}",
        "key", "total ms", "per message", "messages/s"
    );
    for (name, algorithm, bits) in [
        ("RSA-2048", Algorithm::Rsa, 2048),
        ("RSA-4096", Algorithm::Rsa, 4096),
        ("Ed25519", Algorithm::Ed25519, 0),
    ] {
        let Ok(pem) = generate(algorithm, bits) else {
            eprintln!("cannot generate a {name} key");
            std::process::exit(70);
        };
        let Ok(key) = PrivateKey::from_pem(pem.as_bytes()) else {
            eprintln!("cannot read the {name} key");
            std::process::exit(70);
        };
        let signer = Signer::with_keys("bench", vec![("example.org".into(), key)]);
        let start = Instant::now();
        let mut bytes = 0usize;
        for _ in 0..rounds {
            match signer.sign(&message) {
                Ok(Some(field)) => bytes += field.len(),
                other => {
                    eprintln!("{name}: not signed: {other:?}");
                    std::process::exit(70);
                }
            }
        }
        let elapsed = start.elapsed();
        let per = elapsed / rounds;
        println!(
            "{name:<14} {:>12.1} {:>11.3} ms {:>12.0}",
            elapsed.as_secs_f64() * 1000.0,
            per.as_secs_f64() * 1000.0,
            f64::from(rounds) / elapsed.as_secs_f64(),
        );
        std::hint::black_box(bytes);
    }
}
