//! What a form's answer shows once, across its redirect (Post/Redirect/Get): a notice ("Saved.")
//! or a secret just made. A POST keeps it here under a random key and answers `303` to a page
//! whose address carries only that key; the page takes it out as it renders. Reloading the page
//! shows nothing again and posts nothing again.
//!
//! Each entry belongs to the visitor who made it (its session's or portal link's CSRF value):
//! another visitor holding the key gets nothing. Entries last [`FLASH_TTL_MS`], and at most
//! [`MAX_ENTRIES`] are kept (the oldest go first). They live in this process's memory: behind a
//! load balancer, the redirect must come back to the same node (docs/dashboard.md).

use std::collections::VecDeque;
use std::sync::{Mutex, OnceLock};

/// How long a flashed value waits for its page.
pub const FLASH_TTL_MS: u64 = 10 * 60 * 1000;
/// The most values kept at once.
const MAX_ENTRIES: usize = 4096;

/// A value shown once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flashed {
    /// What the last action did.
    Notice(String),
    /// A secret shown once: a new subscription's, or a rotated one.
    Secret {
        title: String,
        id: String,
        secret: String,
        note: String,
    },
}

#[derive(Debug)]
struct Entry {
    key: String,
    owner: String,
    at_ms: u64,
    value: Flashed,
}

/// The values waiting for their page, oldest first.
#[derive(Debug, Default)]
pub struct FlashStore {
    entries: Mutex<VecDeque<Entry>>,
}

impl FlashStore {
    /// Keeps `value` for `owner` (a visitor's CSRF value) at `now_ms`; the key to fetch it by.
    pub fn put(&self, owner: &str, value: Flashed, now_ms: u64) -> String {
        let key = hex::encode(rand::random::<[u8; 16]>());
        // A poisoned lock only means another request panicked mid-push: the queue is intact.
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|e| now_ms.saturating_sub(e.at_ms) < FLASH_TTL_MS);
        while entries.len() >= MAX_ENTRIES {
            entries.pop_front();
        }
        entries.push_back(Entry {
            key: key.clone(),
            owner: owner.to_string(),
            at_ms: now_ms,
            value,
        });
        key
    }

    /// Takes out the value of `key` if `owner` made it and it has not expired at `now_ms`.
    pub fn take(&self, owner: &str, key: &str, now_ms: u64) -> Option<Flashed> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let at = entries.iter().position(|e| {
            crate::signing::constant_time_eq(e.key.as_bytes(), key.as_bytes()) && e.owner == owner
        })?;
        let entry = entries.remove(at)?;
        (now_ms.saturating_sub(entry.at_ms) < FLASH_TTL_MS).then_some(entry.value)
    }
}

/// The dashboard's one store of flashed values.
pub fn store() -> &'static FlashStore {
    static STORE: OnceLock<FlashStore> = OnceLock::new();
    STORE.get_or_init(FlashStore::default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_taken_once_by_its_owner_before_it_expires() {
        let store = FlashStore::default();
        let notice = Flashed::Notice("Saved.".to_string());
        let key = store.put("alice", notice.clone(), 1_000);
        assert_eq!(store.take("mallory", &key, 1_001), None, "another visitor");
        assert_eq!(store.take("alice", &key, 1_001), Some(notice.clone()));
        assert_eq!(store.take("alice", &key, 1_002), None, "a reload");

        // The clock is the argument: just before and at the end of its life.
        let key = store.put("alice", notice.clone(), 1_000);
        assert_eq!(
            store.take("alice", &key, 1_000 + FLASH_TTL_MS - 1),
            Some(notice.clone())
        );
        let key = store.put("alice", notice, 1_000);
        assert_eq!(store.take("alice", &key, 1_000 + FLASH_TTL_MS), None);
    }

    #[test]
    fn the_oldest_go_first_beyond_the_limit() {
        let store = FlashStore::default();
        let first = store.put("a", Flashed::Notice("first".into()), 0);
        for _ in 0..MAX_ENTRIES {
            store.put("a", Flashed::Notice("later".into()), 0);
        }
        assert_eq!(store.take("a", &first, 0), None);
    }
}
