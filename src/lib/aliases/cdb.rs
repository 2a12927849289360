//! D. J. Bernstein's constant database (CDB) format, written and read in memory.
//!
//! Layout (all numbers little-endian u32): a 2048-byte header of 256 `(position, slots)`
//! pairs, one per hash table; the records `key length, data length, key, data`; then the
//! 256 hash tables, each an array of `(hash, record position)` slots. A key's hash is
//! `h = 5381; h = (h * 33) ^ byte`; its table is `h & 255`, its first slot
//! `(h >> 8) % slots`, and slots are probed linearly until an empty one (position 0).
//! This is the format of `cdbmake`, tinycdb and Postfix's `cdb:` tables, so `cdb -q` and
//! `postmap -q name cdb:/etc/aliases` read our files. Keys and values are stored without
//! a trailing NUL, as Postfix does.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

const HEADER: usize = 2048;

/// The CDB hash of a key.
pub fn hash(key: &[u8]) -> u32 {
    key.iter().fold(5381u32, |h, &b| {
        (h.wrapping_shl(5).wrapping_add(h)) ^ u32::from(b)
    })
}

/// Builds a database in memory: records are appended as they come, the hash tables and
/// header are filled in by [`Builder::finish`]. The whole file is then written with one
/// `write` call.
pub struct Builder {
    bytes: Vec<u8>,
    /// `(hash, record position)` for each record, in insertion order.
    slots: Vec<(u32, u32)>,
    /// Hash → index into `slots` of the first record with that hash, for duplicate checks.
    first_with_hash: HashMap<u32, u32, BuildHasherDefault<SpreadHasher>>,
    /// Index into `slots` of the next record with the same hash (`u32::MAX`: none).
    next_with_same_hash: Vec<u32>,
}

/// The keys of `first_with_hash` are already hashes: spreading them with one multiply is
/// enough, and SipHash cost a tenth of the compile time for 100,000 aliases. (Whoever
/// can write the aliases file can do worse than slow down newaliases.)
#[derive(Default)]
struct SpreadHasher(u64);

impl Hasher for SpreadHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(byte)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The database would pass the format's 4 GiB limit.
#[derive(Debug, PartialEq, Eq)]
pub struct TooLarge;

impl Builder {
    pub fn with_capacity(bytes: usize, records: usize) -> Builder {
        let mut data = Vec::with_capacity(HEADER + bytes + records * 24);
        data.resize(HEADER, 0);
        Builder {
            bytes: data,
            slots: Vec::with_capacity(records),
            first_with_hash: HashMap::with_capacity_and_hasher(records, Default::default()),
            next_with_same_hash: Vec::with_capacity(records),
        }
    }

    /// Adds `key` → `value` unless `key` is already present. Returns whether it was added
    /// (`Ok(false)`: a duplicate, the first value stays).
    pub fn insert_unique(&mut self, key: &[u8], value: &[u8]) -> Result<bool, TooLarge> {
        let h = hash(key);
        let mut candidate = self.first_with_hash.get(&h).copied().unwrap_or(u32::MAX);
        while candidate != u32::MAX {
            let (_, position) = self.slots[candidate as usize];
            if self.key_at(position) == Some(key) {
                return Ok(false);
            }
            candidate = self.next_with_same_hash[candidate as usize];
        }
        let position = u32::try_from(self.bytes.len()).map_err(|_| TooLarge)?;
        let key_len = u32::try_from(key.len()).map_err(|_| TooLarge)?;
        let value_len = u32::try_from(value.len()).map_err(|_| TooLarge)?;
        self.bytes.extend_from_slice(&key_len.to_le_bytes());
        self.bytes.extend_from_slice(&value_len.to_le_bytes());
        self.bytes.extend_from_slice(key);
        self.bytes.extend_from_slice(value);
        let index = u32::try_from(self.slots.len()).map_err(|_| TooLarge)?;
        self.slots.push((h, position));
        let previous = self.first_with_hash.insert(h, index).unwrap_or(u32::MAX);
        self.next_with_same_hash.push(previous);
        Ok(true)
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn key_at(&self, position: u32) -> Option<&[u8]> {
        let position = position as usize;
        let key_len = read_u32(&self.bytes, position)? as usize;
        self.bytes.get(position + 8..position + 8 + key_len)
    }

    /// Appends the hash tables, fills in the header, and returns the file's bytes.
    pub fn finish(mut self) -> Result<Vec<u8>, TooLarge> {
        let mut per_table = [0usize; 256];
        for &(h, _) in &self.slots {
            per_table[(h & 255) as usize] += 1;
        }
        // Counting sort of the slots by table, keeping insertion order within a table so
        // that the first of two equal keys (impossible here, but legal in CDB) wins.
        let mut table_start = [0usize; 256];
        let mut running = 0;
        for (table, count) in per_table.iter().enumerate() {
            table_start[table] = running;
            running += count;
        }
        let mut sorted = vec![(0u32, 0u32); self.slots.len()];
        let mut fill = table_start;
        for &(h, position) in &self.slots {
            let table = (h & 255) as usize;
            sorted[fill[table]] = (h, position);
            fill[table] += 1;
        }
        let mut table = Vec::new();
        for t in 0..256 {
            let entries = &sorted[table_start[t]..table_start[t] + per_table[t]];
            let slot_count = entries.len() * 2;
            let position = u32::try_from(self.bytes.len()).map_err(|_| TooLarge)?;
            let slot_count_u32 = u32::try_from(slot_count).map_err(|_| TooLarge)?;
            self.bytes[t * 8..t * 8 + 4].copy_from_slice(&position.to_le_bytes());
            self.bytes[t * 8 + 4..t * 8 + 8].copy_from_slice(&slot_count_u32.to_le_bytes());
            table.clear();
            table.resize(slot_count, (0u32, 0u32));
            for &(h, record) in entries {
                let mut slot = (h >> 8) as usize % slot_count;
                while table[slot].1 != 0 {
                    slot = (slot + 1) % slot_count;
                }
                table[slot] = (h, record);
            }
            for &(h, record) in &table {
                self.bytes.extend_from_slice(&h.to_le_bytes());
                self.bytes.extend_from_slice(&record.to_le_bytes());
            }
        }
        u32::try_from(self.bytes.len()).map_err(|_| TooLarge)?;
        Ok(self.bytes)
    }
}

/// A database read into memory, checked whole when read ([`Reader::new`]): a truncated
/// or corrupt file is an error, never a table that silently lacks names. Every read is
/// bounds-checked as well, so no input can make a lookup panic.
#[derive(Debug, Clone)]
pub struct Reader {
    bytes: Vec<u8>,
}

/// Why the bytes are not a sound CDB file.
#[derive(Debug, PartialEq, Eq)]
pub struct Corrupt(pub String);

impl std::fmt::Display for Corrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Reader {
    /// Checks `bytes` and keeps them. The checks follow the layout every writer of the
    /// format produces (cdbmake, tinycdb, Postfix's `cdb:` tables, ours): the records
    /// follow the header without a gap, the hash tables follow the records and each other
    /// without a gap up to the end of the file, and every record is in exactly one slot,
    /// of the table its key's hash names. A cut-off file, garbage after the end, a
    /// changed key, a lost or moved slot all fail.
    pub fn new(bytes: Vec<u8>) -> Result<Reader, Corrupt> {
        check(&bytes)?;
        Ok(Reader { bytes })
    }

    /// A database with no records (an all-zero header: 256 empty tables).
    pub fn empty() -> Reader {
        Reader {
            bytes: vec![0; HEADER],
        }
    }
    /// The value of the first record whose key is `key`.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        let h = hash(key);
        let table = (h & 255) as usize * 8;
        let table_position = read_u32(&self.bytes, table)? as usize;
        let slot_count = read_u32(&self.bytes, table + 4)? as usize;
        if slot_count == 0 {
            return None;
        }
        let first = (h >> 8) as usize % slot_count;
        for probe in 0..slot_count {
            let slot = table_position + ((first + probe) % slot_count) * 8;
            let slot_hash = read_u32(&self.bytes, slot)?;
            let record = read_u32(&self.bytes, slot + 4)? as usize;
            if record == 0 {
                return None;
            }
            if slot_hash != h {
                continue;
            }
            let key_len = read_u32(&self.bytes, record)? as usize;
            let value_len = read_u32(&self.bytes, record + 4)? as usize;
            let key_start = record + 8;
            if self.bytes.get(key_start..key_start.checked_add(key_len)?)? == key {
                let value_start = key_start + key_len;
                return self
                    .bytes
                    .get(value_start..value_start.checked_add(value_len)?);
            }
        }
        None
    }

    pub fn size(&self) -> usize {
        self.bytes.len()
    }
}

/// The checks of [`Reader::new`]: the header's hash tables fit, the records run
/// back to back up to the first table, the tables back to back up to the end, and the
/// tables name every record once, under its key's hash.
fn check(bytes: &[u8]) -> Result<(), Corrupt> {
    let len = bytes.len();
    if len < HEADER {
        return Err(Corrupt(format!(
            "{len} bytes, shorter than the {HEADER}-byte header"
        )));
    }
    let mut tables = hash_tables(bytes)?;
    let records_end = tables.iter().map(|t| t.position).min().unwrap_or(len);
    let records = record_starts(bytes, records_end)?;
    tables.sort_by_key(|t| t.position);
    let mut expected = records_end;
    for t in &tables {
        if t.position != expected {
            return Err(Corrupt(format!(
                "hash table {} is at byte {}, not at byte {expected}",
                t.table, t.position
            )));
        }
        expected = t.position + t.slots * 8;
    }
    if expected != len {
        return Err(Corrupt(format!(
            "{} bytes after the last hash table",
            len.saturating_sub(expected)
        )));
    }
    check_slots(bytes, &tables, &records)
}

/// One hash table of the header that has slots.
struct HashTable {
    table: usize,
    position: usize,
    slots: usize,
}

/// The header's hash tables that have slots; each must fit in the file.
fn hash_tables(bytes: &[u8]) -> Result<Vec<HashTable>, Corrupt> {
    let len = bytes.len();
    let mut tables = Vec::new();
    for table in 0..256 {
        let position = read_u32(bytes, table * 8).unwrap_or(0) as usize;
        let slots = read_u32(bytes, table * 8 + 4).unwrap_or(0) as usize;
        let end = slots.checked_mul(8).and_then(|n| n.checked_add(position));
        match end {
            _ if slots == 0 && position <= len => {}
            Some(end) if slots > 0 && position >= HEADER && end <= len => {
                tables.push(HashTable {
                    table,
                    position,
                    slots,
                });
            }
            _ => {
                return Err(Corrupt(format!(
                    "hash table {table} ({slots} slots at byte {position}) does not fit in \
                     the file ({len} bytes)"
                )));
            }
        }
    }
    Ok(tables)
}

/// Where each record starts: one after another from the header up to `records_end`.
fn record_starts(bytes: &[u8], records_end: usize) -> Result<Vec<usize>, Corrupt> {
    let mut records = Vec::new();
    let mut at = HEADER;
    while at < records_end {
        let key_len = read_u32(bytes, at).map(|n| n as usize);
        let value_len = read_u32(bytes, at + 4).map(|n| n as usize);
        let end = match (key_len, value_len) {
            (Some(k), Some(v)) => k.checked_add(v).and_then(|n| n.checked_add(at + 8)),
            _ => None,
        };
        match end {
            Some(end) if end <= records_end => {
                records.push(at);
                at = end;
            }
            _ => {
                return Err(Corrupt(format!(
                    "the record at byte {at} runs past the end of the records (byte \
                     {records_end})"
                )));
            }
        }
    }
    Ok(records)
}

/// Every slot in use names a record start whose key has the slot's hash, of this
/// table; every record is named once.
fn check_slots(bytes: &[u8], tables: &[HashTable], records: &[usize]) -> Result<(), Corrupt> {
    let mut named = vec![false; records.len()];
    for t in tables {
        let table = t.table;
        for slot in (t.position..t.position + t.slots * 8).step_by(8) {
            let (Some(slot_hash), Some(record)) =
                (read_u32(bytes, slot), read_u32(bytes, slot + 4))
            else {
                return Err(Corrupt(format!("hash table {table} is cut off")));
            };
            if record == 0 {
                continue;
            }
            let Ok(index) = records.binary_search(&(record as usize)) else {
                return Err(Corrupt(format!(
                    "a slot of hash table {table} points to byte {record}, where no record \
                     starts"
                )));
            };
            let record = record as usize;
            let key_len = read_u32(bytes, record).unwrap_or(0) as usize;
            let key = bytes
                .get(record + 8..record + 8 + key_len)
                .unwrap_or_default();
            if hash(key) != slot_hash || (slot_hash & 255) as usize != table {
                return Err(Corrupt(format!(
                    "the key of the record at byte {record} does not match its hash"
                )));
            }
            if std::mem::replace(&mut named[index], true) {
                return Err(Corrupt(format!(
                    "the record at byte {record} is in two slots"
                )));
            }
        }
    }
    if let Some(index) = named.iter().position(|&n| !n) {
        return Err(Corrupt(format!(
            "the record at byte {} is in no hash table",
            records[index]
        )));
    }
    Ok(())
}

fn read_u32(bytes: &[u8], position: usize) -> Option<u32> {
    let word = bytes.get(position..position.checked_add(4)?)?;
    Some(u32::from_le_bytes([word[0], word[1], word[2], word[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_matches_the_reference_implementation() {
        // (h * 33) ^ byte from 5381, as cdb_hash() in cdbmake computes it.
        assert_eq!(hash(b""), 5381);
        assert_eq!(hash(b"a"), 177_604);
        assert_eq!(hash(b"root"), 2_088_305_379);
    }

    #[test]
    fn round_trip_many_keys() {
        let mut builder = Builder::with_capacity(0, 0);
        for i in 0..5000 {
            assert_eq!(
                builder.insert_unique(format!("key{i}").as_bytes(), format!("value{i}").as_bytes()),
                Ok(true)
            );
        }
        assert_eq!(builder.insert_unique(b"key7", b"other"), Ok(false));
        assert_eq!(builder.len(), 5000);
        let reader = Reader::new(builder.finish().expect("fits")).expect("valid");
        for i in 0..5000 {
            assert_eq!(
                reader.get(format!("key{i}").as_bytes()),
                Some(format!("value{i}").as_bytes())
            );
        }
        assert_eq!(reader.get(b"key7"), Some(&b"value7"[..]));
        assert_eq!(reader.get(b"missing"), None);
    }

    #[test]
    fn empty_database_and_empty_key() {
        let reader =
            Reader::new(Builder::with_capacity(0, 0).finish().expect("fits")).expect("valid");
        assert_eq!(reader.size(), 2048);
        assert_eq!(reader.get(b"x"), None);
        let mut builder = Builder::with_capacity(0, 0);
        builder.insert_unique(b"", b"empty").expect("fits");
        let reader = Reader::new(builder.finish().expect("fits")).expect("valid");
        assert_eq!(reader.get(b""), Some(&b"empty"[..]));
    }

    fn fifty() -> Vec<u8> {
        let mut builder = Builder::with_capacity(0, 0);
        for i in 0..50 {
            builder
                .insert_unique(format!("k{i}").as_bytes(), b"value")
                .expect("fits");
        }
        builder.finish().expect("fits")
    }

    /// Issue defect 3: a truncated or corrupt database was read as a table without the
    /// names it lost, so that mail to them bounced. Each damage is refused.
    #[test]
    fn truncated_or_corrupt_files_are_refused() {
        let good = fifty();
        let records_end = read_u32(&good, 0).unwrap() as usize;
        fn put(bytes: &mut [u8], at: usize, value: u32) {
            bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
        }
        // The first used slot of the table of "k7".
        let h = hash(b"k7");
        let table = read_u32(&good, (h & 255) as usize * 8).unwrap() as usize;
        let slots = read_u32(&good, (h & 255) as usize * 8 + 4).unwrap() as usize;
        let used = (0..slots)
            .map(|i| table + i * 8)
            .find(|&slot| read_u32(&good, slot + 4) != Some(0))
            .unwrap();
        type Damage = Box<dyn Fn(&mut Vec<u8>)>;
        let cases: Vec<(&str, Damage)> = vec![
            ("empty", Box::new(|b| b.clear())),
            ("shorter than the header", Box::new(|b| b.truncate(100))),
            ("the header alone", Box::new(|b| b.truncate(2048))),
            (
                "cut in the records",
                Box::new(move |b| b.truncate(records_end - 3)),
            ),
            (
                "cut in the hash tables",
                Box::new(move |b| b.truncate(records_end + 20)),
            ),
            (
                "last byte missing",
                Box::new(|b| {
                    b.pop();
                }),
            ),
            (
                "garbage after the end",
                Box::new(|b| b.extend_from_slice(b"junk")),
            ),
            (
                "a record length too long",
                Box::new(|b| put(b, 2048 + 4, 1 << 30)),
            ),
            (
                "a table past the end",
                Box::new(|b| put(b, 8, u32::MAX - 4)),
            ),
            (
                "a slot count that overflows",
                Box::new(|b| put(b, 4, u32::MAX)),
            ),
            (
                "a slot into the middle of a record",
                Box::new(move |b| {
                    let record = read_u32(b, used + 4).unwrap();
                    put(b, used + 4, record + 1);
                }),
            ),
            (
                "a slot with the wrong hash",
                Box::new(move |b| {
                    let hash = read_u32(b, used).unwrap();
                    put(b, used, hash ^ 0x100);
                }),
            ),
            ("a key changed", Box::new(|b| b[2048 + 8] ^= 0x20)),
            ("a slot zeroed", Box::new(move |b| put(b, used + 4, 0))),
            (
                "hash tables zeroed",
                Box::new(move |b| {
                    let end = b.len();
                    b[records_end..end].fill(0);
                }),
            ),
            ("header zeroed", Box::new(|b| b[..2048].fill(0))),
        ];
        assert!(Reader::new(good.clone()).is_ok());
        for (what, damage) in &cases {
            let mut bytes = good.clone();
            damage(&mut bytes);
            assert!(Reader::new(bytes).is_err(), "{what}: accepted");
        }
        // Whatever the bytes, no panic.
        let mut garbage = good.clone();
        for (i, byte) in garbage.iter_mut().enumerate() {
            *byte = byte.wrapping_mul(31).wrapping_add(i as u8);
        }
        assert!(Reader::new(garbage).is_err());
        for cut in 0..good.len() {
            let _ = Reader::new(good[..cut].to_vec());
        }
    }

    /// A database made by an independent writer (cdbmake's algorithm, in Python) passes
    /// the checks and reads back.
    #[test]
    fn a_database_made_elsewhere_is_accepted() {
        const CDBMAKE: &str = r#"
import struct, sys
def h(k):
    v = 5381
    for c in k:
        v = ((v << 5) + v) & 0xffffffff ^ c
    return v
records = [(b'root', b'alice'), (b'team', b'alice, bob'), (b'', b'empty'), (b'dup', b'1'), (b'dup', b'2')]
out = bytearray(2048)
slots = [[] for _ in range(256)]
for k, v in records:
    slots[h(k) & 255].append((h(k), len(out)))
    out += struct.pack('<II', len(k), len(v)) + k + v
header = b''
for t in range(256):
    n = len(slots[t]) * 2
    table = [(0, 0)] * n
    for hv, pos in slots[t]:
        i = (hv >> 8) % n
        while table[i][1]:
            i = (i + 1) % n
        table[i] = (hv, pos)
    header += struct.pack('<II', len(out), n)
    for hv, pos in table:
        out += struct.pack('<II', hv, pos)
out[:2048] = header
sys.stdout.buffer.write(bytes(out))
"#;
        let made = std::process::Command::new("python3")
            .args(["-c", CDBMAKE])
            .output()
            .expect("python3");
        assert!(made.status.success());
        let reader = Reader::new(made.stdout).expect("valid");
        assert_eq!(reader.get(b"team"), Some(&b"alice, bob"[..]));
        assert_eq!(reader.get(b""), Some(&b"empty"[..]));
        assert_eq!(reader.get(b"dup"), Some(&b"1"[..]));
        assert_eq!(reader.get(b"nobody"), None);
    }
}
