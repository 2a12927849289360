//! Places for deliveries to one destination at once (`smtp_destination_concurrency_limit`,
//! Postfix's per-destination concurrency), and for remote deliveries at all
//! (`default_process_limit`): a delivery takes a [`Slot`] before it starts and gives it
//! back when it ends, by dropping it. A delivery that finds none free is not tried: its
//! message waits in `active/` until a slot is given back (see `scheduler::Dispatcher`),
//! and nothing is deferred for it. Waiting here rather than in a thread keeps threads for
//! local mail however many remote deliveries hang (`pool`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// The deliveries in flight to each destination, and how many each may have.
#[derive(Debug)]
pub struct DestinationSlots {
    /// 0: no limit.
    limit: usize,
    /// For all destinations together; at least 1.
    total: usize,
    busy: Mutex<Busy>,
}

#[derive(Debug, Default)]
struct Busy {
    /// Only destinations with a delivery in flight: the map is never larger than
    /// `total`.
    by_destination: HashMap<String, usize>,
    all: usize,
}

impl Busy {
    fn room(&self, slots: &DestinationSlots, key: &str) -> bool {
        self.all < slots.total
            && (slots.limit == 0
                || self.by_destination.get(key).copied().unwrap_or(0) < slots.limit)
    }
}

/// One delivery's place; dropping it frees the place.
#[derive(Debug)]
pub struct Slot {
    /// `None`: a place where nothing is counted.
    held: Option<(Arc<DestinationSlots>, String)>,
}

impl Slot {
    /// A place from an agent with no limit.
    pub fn unlimited() -> Slot {
        Slot { held: None }
    }
}

impl DestinationSlots {
    /// At most `limit` deliveries to one destination (0: no limit), and `total` to all.
    pub fn new(limit: u64, total: usize) -> Arc<DestinationSlots> {
        Arc::new(DestinationSlots {
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            total: total.max(1),
            busy: Mutex::new(Busy::default()),
        })
    }

    fn busy(&self) -> MutexGuard<'_, Busy> {
        self.busy.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for one more delivery to `key`, or `None` while `limit` are in flight to
    /// it, or `total` to all.
    pub fn take(self: &Arc<Self>, key: &str) -> Option<Slot> {
        let mut busy = self.busy();
        if !busy.room(self, key) {
            return None;
        }
        busy.all += 1;
        *busy.by_destination.entry(key.to_owned()).or_insert(0) += 1;
        Some(Slot {
            held: Some((Arc::clone(self), key.to_owned())),
        })
    }

    /// Whether [`take`](DestinationSlots::take) would find a place for `key` now.
    pub fn has_room(&self, key: &str) -> bool {
        self.busy().room(self, key)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some((slots, key)) = &self.held else {
            return;
        };
        let mut busy = slots.busy();
        busy.all = busy.all.saturating_sub(1);
        if let Some(count) = busy.by_destination.get_mut(key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                busy.by_destination.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_destination_gets_at_most_its_limit_and_others_are_not_held_up() {
        let slots = DestinationSlots::new(2, 100);
        let a1 = slots.take("a.example").expect("first");
        let a2 = slots.take("a.example").expect("second");
        assert!(slots.take("a.example").is_none());
        assert!(!slots.has_room("a.example"));
        let b = slots.take("b.example").expect("another destination");
        drop(a1);
        assert!(slots.has_room("a.example"));
        let a3 = slots.take("a.example").expect("a freed place");
        drop((a2, a3, b));
        let busy = slots.busy();
        assert!(
            busy.by_destination.is_empty() && busy.all == 0,
            "nothing kept for idle destinations"
        );
    }

    #[test]
    fn all_destinations_together_get_at_most_the_total() {
        let slots = DestinationSlots::new(2, 3);
        let a = slots.take("a.example").expect("a");
        let b = slots.take("b.example").expect("b");
        let c = slots.take("c.example").expect("c");
        assert!(slots.take("d.example").is_none(), "a fourth in all");
        assert!(!slots.has_room("d.example"));
        assert!(!slots.has_room("a.example"));
        drop(b);
        assert!(slots.has_room("d.example"));
        let d = slots.take("d.example").expect("a freed place");
        drop((a, c, d));
    }

    #[test]
    fn zero_is_no_limit() {
        let slots = DestinationSlots::new(0, 1000);
        let held: Vec<Slot> = (0..100).filter_map(|_| slots.take("a.example")).collect();
        assert_eq!(held.len(), 100);
        assert!(slots.has_room("a.example"));
    }
}
