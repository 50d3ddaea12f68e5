//! A small map bounded in age and size: every insert drops the entries older than the TTL, and
//! at the cap the oldest entry makes room. Keyed by URLs the M2MTokens name (discovery, JWKS),
//! and by the ServiceAccounts the webhook found missing.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// At most `cap` entries, each served for `ttl` after it was stored.
pub(crate) struct BoundedCache<V> {
    ttl: Duration,
    cap: usize,
    map: HashMap<String, (Instant, V)>,
}

impl<V: Clone> BoundedCache<V> {
    pub(crate) fn new(ttl: Duration, cap: usize) -> Self {
        Self {
            ttl,
            cap: cap.max(1),
            map: HashMap::new(),
        }
    }

    /// The value stored for `key` less than the TTL before `now`.
    pub(crate) fn get(&self, key: &str, now: Instant) -> Option<V> {
        self.map
            .get(key)
            .filter(|(at, _)| now.saturating_duration_since(*at) < self.ttl)
            .map(|(_, v)| v.clone())
    }

    /// Stores `value` for `key` at `now`, after dropping expired entries and, at the cap, the
    /// oldest one.
    pub(crate) fn insert(&mut self, key: &str, value: V, now: Instant) {
        let ttl = self.ttl;
        self.map
            .retain(|_, (at, _)| now.saturating_duration_since(*at) < ttl);
        if !self.map.contains_key(key) && self.map.len() >= self.cap {
            let oldest = self
                .map
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.map.remove(&k);
            }
        }
        self.map.insert(key.to_owned(), (now, value));
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_keys_stay_within_the_cap_and_the_oldest_goes_first() {
        let start = Instant::now();
        let mut c = BoundedCache::new(Duration::from_secs(3600), 8);
        for i in 0..100u64 {
            c.insert(
                &format!("https://i{i}.example"),
                i,
                start + Duration::from_millis(i),
            );
            assert!(c.len() <= 8);
        }
        assert_eq!(c.len(), 8);
        let now = start + Duration::from_secs(1);
        assert_eq!(c.get("https://i99.example", now), Some(99));
        assert_eq!(c.get("https://i92.example", now), Some(92));
        assert_eq!(c.get("https://i91.example", now), None);
    }

    #[test]
    fn entries_expire_and_are_dropped_on_insert() {
        let start = Instant::now();
        let mut c = BoundedCache::new(Duration::from_secs(60), 100);
        c.insert("a", 1, start);
        c.insert("b", 2, start + Duration::from_secs(30));
        assert_eq!(c.get("a", start + Duration::from_secs(59)), Some(1));
        assert_eq!(c.get("a", start + Duration::from_secs(60)), None);
        c.insert("c", 3, start + Duration::from_secs(61));
        assert_eq!(c.len(), 2, "a expired and was dropped");
        // Storing an existing key at the cap replaces it without evicting another.
        let mut c = BoundedCache::new(Duration::from_secs(60), 2);
        c.insert("a", 1, start);
        c.insert("b", 2, start);
        c.insert("a", 3, start);
        assert_eq!((c.len(), c.get("b", start)), (2, Some(2)));
    }
}
