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

/// A database read into memory. Every read is bounds-checked: a truncated or corrupt file
/// answers "not found", it never panics.
#[derive(Debug, Clone)]
pub struct Reader {
    bytes: Vec<u8>,
}

/// The bytes are too short to be a CDB file.
#[derive(Debug, PartialEq, Eq)]
pub struct NotCdb;

impl Reader {
    pub fn new(bytes: Vec<u8>) -> Result<Reader, NotCdb> {
        if bytes.len() < HEADER {
            return Err(NotCdb);
        }
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

    #[test]
    fn corrupt_files_never_panic() {
        assert_eq!(Reader::new(vec![0; 100]).err(), Some(NotCdb));
        let mut builder = Builder::with_capacity(0, 0);
        for i in 0..50 {
            builder
                .insert_unique(format!("k{i}").as_bytes(), b"v")
                .expect("fits");
        }
        let good = builder.finish().expect("fits");
        for cut in [2048, 2100, good.len() - 1] {
            let reader = Reader::new(good[..cut].to_vec()).expect("long enough");
            for i in 0..50 {
                let _ = reader.get(format!("k{i}").as_bytes());
            }
        }
        let mut garbage = good.clone();
        for (i, byte) in garbage.iter_mut().enumerate() {
            *byte = byte.wrapping_mul(31).wrapping_add(i as u8);
        }
        let reader = Reader::new(garbage).expect("long enough");
        for i in 0..50 {
            let _ = reader.get(format!("k{i}").as_bytes());
        }
    }
}
