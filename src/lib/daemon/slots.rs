//! Places for deliveries to one destination at once (`smtp_destination_concurrency_limit`,
//! Postfix's per-destination concurrency): a delivery takes a [`Slot`] before it starts and
//! gives it back when it ends, by dropping it. A delivery that finds none free is not
//! tried: its message waits in `active/` until a slot is given back (see
//! `scheduler::Dispatcher`), and nothing is deferred for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// The deliveries in flight to each destination, and how many each may have.
#[derive(Debug)]
pub struct DestinationSlots {
    /// 0: no limit.
    limit: usize,
    /// Only destinations with a delivery in flight: the map is never larger than the
    /// number of delivery threads.
    busy: Mutex<HashMap<String, usize>>,
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
    pub fn new(limit: u64) -> Arc<DestinationSlots> {
        Arc::new(DestinationSlots {
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            busy: Mutex::new(HashMap::new()),
        })
    }

    fn busy(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        self.busy.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for one more delivery to `key`, or `None` while `limit` are in flight.
    pub fn take(self: &Arc<Self>, key: &str) -> Option<Slot> {
        let mut busy = self.busy();
        let count = busy.get(key).copied().unwrap_or(0);
        if self.limit != 0 && count >= self.limit {
            return None;
        }
        busy.insert(key.to_owned(), count + 1);
        Some(Slot {
            held: Some((Arc::clone(self), key.to_owned())),
        })
    }

    /// Whether [`take`](DestinationSlots::take) would find a place for `key` now.
    pub fn has_room(&self, key: &str) -> bool {
        self.limit == 0 || self.busy().get(key).copied().unwrap_or(0) < self.limit
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some((slots, key)) = &self.held else {
            return;
        };
        let mut busy = slots.busy();
        if let Some(count) = busy.get_mut(key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                busy.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_destination_gets_at_most_its_limit_and_others_are_not_held_up() {
        let slots = DestinationSlots::new(2);
        let a1 = slots.take("a.example").expect("first");
        let a2 = slots.take("a.example").expect("second");
        assert!(slots.take("a.example").is_none());
        assert!(!slots.has_room("a.example"));
        let b = slots.take("b.example").expect("another destination");
        drop(a1);
        assert!(slots.has_room("a.example"));
        let a3 = slots.take("a.example").expect("a freed place");
        drop((a2, a3, b));
        assert!(
            slots.busy().is_empty(),
            "nothing kept for idle destinations"
        );
    }

    #[test]
    fn zero_is_no_limit() {
        let slots = DestinationSlots::new(0);
        let held: Vec<Slot> = (0..100).filter_map(|_| slots.take("a.example")).collect();
        assert_eq!(held.len(), 100);
        assert!(slots.has_room("a.example"));
    }
}
