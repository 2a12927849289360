//! Lookup rate of a compiled alias database: `cargo bench --bench aliases_lookup -- SOURCE N`
//! (SOURCE without `.cdb`; N = how many aliases the file has, in compare.sh's shape).
//! Prints `get` (contents in memory) and `lookup` (stat for a rebuild first, as delivery
//! does) rates, and a full expansion rate. Run by `benches/aliases.sh`.

use std::time::Instant;

use mailroom::aliases::{AliasDb, AliasMaps, ExpandOptions, Privileges, expand};

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let (Some(source), Some(count)) = (
        args.first(),
        args.get(1).and_then(|n| n.parse::<usize>().ok()),
    ) else {
        eprintln!("usage: aliases_lookup SOURCE COUNT");
        std::process::exit(64);
    };
    let names: Vec<String> = (0..count)
        .map(|i| match i % 10 {
            0 => format!("list{i}"),
            1 => format!("pipe{i}"),
            _ => format!("alias{i}"),
        })
        .collect();
    let Ok(mut db) = AliasDb::open(std::path::Path::new(source)) else {
        eprintln!("cannot open {source}.cdb");
        std::process::exit(66);
    };
    let rounds = (1_000_000 / count).max(1);
    let total = rounds * count;

    let start = Instant::now();
    let mut found = 0usize;
    for _ in 0..rounds {
        for name in &names {
            found += usize::from(db.get(name).is_some());
        }
    }
    let get_rate = total as f64 / start.elapsed().as_secs_f64();
    assert_eq!(found, total, "every generated name must be found");

    let start = Instant::now();
    let lookups = total.min(200_000);
    for name in names.iter().cycle().take(lookups) {
        let _ = db.lookup(name);
    }
    let lookup_rate = lookups as f64 / start.elapsed().as_secs_f64();

    let Ok(mut maps) = AliasMaps::open(&[source]) else {
        std::process::exit(66);
    };
    let options = ExpandOptions::new(
        "example.org",
        Privileges {
            uid: 65534,
            gid: 65534,
        },
    );
    let start = Instant::now();
    let expansions = total.min(200_000);
    for name in names.iter().cycle().take(expansions) {
        let _ = expand(&mut maps, name, &options);
    }
    let expand_rate = expansions as f64 / start.elapsed().as_secs_f64();
    println!("{get_rate:.0} {lookup_rate:.0} {expand_rate:.0}");
}
