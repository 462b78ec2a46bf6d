//! One fetch per key, however many requests ask at once.
//!
//! Owns the in-flight map: the first request for a key that is not cached
//! becomes the leader and starts the work; later ones follow it. The "is it
//! cached?" check runs under the same lock as the map, so a fetch that
//! completes between a request's cache check and its map lookup can never
//! cause a second fetch. The leader's [`Ticket`] removes the entry when the
//! work ends (also on panic), so the next request after a failure starts a
//! fresh fetch. This module must not know what is fetched.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

type Map<K, H> = Arc<Mutex<HashMap<K, (u64, H)>>>;

/// In-flight work by key; `H` is the handle followers get.
pub struct Flights<K, H> {
    map: Map<K, H>,
    next_id: AtomicU64,
}

/// The outcome of [`Flights::join`].
pub enum Join<H, C, P> {
    /// Already cached: no flight needed.
    Cached(C),
    /// Another request is fetching: follow it.
    Follow(H),
    /// This request started the work: `P` is what `start` produced for the
    /// leader alone.
    Lead(H, P),
}

/// Ends a flight when dropped.
pub struct Ticket<K: Eq + Hash, H> {
    map: Map<K, H>,
    key: Option<K>,
    id: u64,
}

impl<K: Eq + Hash, H> Drop for Ticket<K, H> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let mut map = self.map.lock().expect("flights lock");
            if map.get(&key).is_some_and(|(id, _)| *id == self.id) {
                map.remove(&key);
            }
        }
    }
}

impl<K: Eq + Hash + Clone, H: Clone> Default for Flights<K, H> {
    fn default() -> Self {
        Flights {
            map: Arc::new(Mutex::new(HashMap::new())),
            next_id: AtomicU64::new(0),
        }
    }
}

impl<K: Eq + Hash + Clone, H: Clone> Flights<K, H> {
    /// Check the cache and the map atomically; follow, or lead a new flight.
    ///
    /// `start` runs under the map's lock and receives the flight's ticket: it
    /// must hand the ticket to whatever does the work (typically a spawned
    /// task) or return it in `P`, and must not drop it itself.
    pub fn join<C, P>(
        &self,
        key: &K,
        cached: impl FnOnce() -> Option<C>,
        start: impl FnOnce(Ticket<K, H>) -> (H, P),
    ) -> Join<H, C, P> {
        let mut map = self.map.lock().expect("flights lock");
        if let Some((_, h)) = map.get(key) {
            return Join::Follow(h.clone());
        }
        if let Some(c) = cached() {
            return Join::Cached(c);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let ticket = Ticket {
            map: self.map.clone(),
            key: Some(key.clone()),
            id,
        };
        let (handle, private) = start(ticket);
        map.insert(key.clone(), (id, handle.clone()));
        Join::Lead(handle, private)
    }

    /// The flight in progress for `key`, if any.
    pub fn get(&self, key: &K) -> Option<H> {
        self.map
            .lock()
            .expect("flights lock")
            .get(key)
            .map(|(_, h)| h.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_then_followers_then_fresh_after_ticket_drops() {
        let f: Flights<&str, u32> = Flights::default();
        let Join::Lead(h, ticket) = f.join(&"k", || None::<()>, |t| (7, t)) else {
            panic!("first caller must lead")
        };
        assert_eq!(h, 7);
        assert!(matches!(
            f.join(&"k", || Some(()), |t| (8, t)),
            Join::Follow(7)
        ));
        assert_eq!(f.get(&"k"), Some(7));
        drop(ticket);
        assert!(f.get(&"k").is_none());
        assert!(matches!(
            f.join(&"k", || Some(()), |t| (9, t)),
            Join::Cached(())
        ));
        assert!(matches!(
            f.join(&"k", || None::<()>, |t| (9, t)),
            Join::Lead(9, _)
        ));
    }

    #[test]
    fn an_old_ticket_does_not_end_a_newer_flight() {
        let f: Flights<&str, u32> = Flights::default();
        let Join::Lead(_, t1) = f.join(&"k", || None::<()>, |t| (1, t)) else {
            panic!()
        };
        // Simulate the entry having been replaced by a newer flight.
        f.map.lock().unwrap().insert("k", (99, 2));
        drop(t1);
        assert!(matches!(
            f.join(&"k", || None::<()>, |t| (3, t)),
            Join::Follow(2)
        ));
    }
}
