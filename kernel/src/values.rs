//! A session's named JSON values (`session().set/get` in the prelude), kept in memory for the
//! session's life, within the session's bound and the gateway's (every session's values together).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tilegate_sandbox::SessionValues;
use tilegate_sessions::Store;

/// All values of one session together may take this many bytes.
const SESSION_BYTES: usize = 256 << 20;

/// Results kept as `result_<id>` per session (the oldest go first), and the largest kept.
const KEPT_RESULTS: usize = 20;
const RESULT_BYTES: usize = 32 << 20;

/// The memory every session's values share (`session_values_memory_mib`).
#[derive(Debug)]
pub struct Budget {
    used: AtomicUsize,
    limit: usize,
}

impl Budget {
    /// At most `limit` bytes for every session's values together.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self { used: AtomicUsize::new(0), limit })
    }

    /// Takes `bytes` if they fit.
    fn take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                (used + bytes <= self.limit).then_some(used + bytes)
            })
            .is_ok()
    }

    /// Takes `bytes` whether they fit or not (values already recorded, read back after a restart).
    fn force(&self, bytes: usize) {
        self.used.fetch_add(bytes, Ordering::Relaxed);
    }

    fn give_back(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// One session's values: name → JSON text (checked to be JSON when set). Values set by snippets
/// are recorded in the state database when there is one (`result_<id>` are not: they are rebuilt
/// from the statements' outputs).
pub struct Values {
    map: Mutex<HashMap<String, Arc<[u8]>>>,
    record: Option<(Arc<Store>, u64)>,
    budget: Arc<Budget>,
}

impl Default for Values {
    /// Values not recorded, under no bound but the session's.
    fn default() -> Self {
        Self { map: Mutex::default(), record: None, budget: Budget::new(usize::MAX) }
    }
}

impl Drop for Values {
    fn drop(&mut self) {
        let map = self.map.get_mut().unwrap_or_else(PoisonError::into_inner);
        self.budget.give_back(map.values().map(|v| v.len()).sum());
    }
}

impl std::fmt::Debug for Values {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Values").field("session", &self.record.as_ref().map(|(_, s)| s)).finish_non_exhaustive()
    }
}

impl Values {
    /// Values of a new session `session`, recorded in `store` as they are set, sharing `budget`
    /// with every other session's.
    pub fn recorded(store: Arc<Store>, session: u64, budget: Arc<Budget>) -> Self {
        Self { map: Mutex::default(), record: Some((store, session)), budget }
    }

    /// [`Values::recorded`] for a session restored after a restart: starting with what `store`
    /// holds for it.
    pub fn restored(store: Arc<Store>, session: u64, budget: Arc<Budget>) -> Self {
        let stored = store.values(session).unwrap_or_else(|e| {
            tracing::error!(session, "could not read session values: {e}");
            Vec::new()
        });
        let map: HashMap<String, Arc<[u8]>> = stored.into_iter().map(|(name, json)| (name, Arc::from(json))).collect();
        budget.force(map.values().map(|v| v.len()).sum());
        Self { map: Mutex::new(map), record: Some((store, session)), budget }
    }

    /// Values not recorded (one-shot work: a batch), sharing `budget`.
    pub fn in_memory(budget: Arc<Budget>) -> Self {
        Self { map: Mutex::default(), record: None, budget }
    }

    /// Every value, name and JSON.
    pub fn all(&self) -> Vec<(String, Arc<[u8]>)> {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Keeps a statement's JSON result as `result_<statement>` (the last 20, each up to 32 MiB;
    /// never over the session's total), so later statements can read it and query it in SQL.
    pub fn keep_result(&self, statement: u64, json: &serde_json::Value) {
        if let Ok(bytes) = serde_json::to_vec(json) {
            self.keep_result_text(statement, &bytes);
        }
    }

    /// [`Values::keep_result`] for a value already serialised.
    pub fn keep_result_text(&self, statement: u64, bytes: &[u8]) {
        if bytes.len() > RESULT_BYTES {
            return;
        }
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let mut results: Vec<u64> =
            map.keys().filter_map(|k| k.strip_prefix("result_")?.parse().ok()).collect::<Vec<u64>>();
        results.sort_unstable();
        while results.len() >= KEPT_RESULTS {
            if let Some(old) = map.remove(&format!("result_{}", results.remove(0))) {
                self.budget.give_back(old.len());
            }
        }
        let total: usize = map.values().map(|v| v.len()).sum();
        // Past the gateway's bound the result is not kept (its output still has it).
        if total + bytes.len() <= SESSION_BYTES
            && self.budget.take(bytes.len())
            && let Some(old) = map.insert(format!("result_{statement}"), Arc::from(bytes))
        {
            self.budget.give_back(old.len());
        }
    }
}

impl SessionValues for Values {
    fn get(&self, name: &str) -> Option<Arc<[u8]>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner).get(name).cloned()
    }

    fn set(&self, name: &str, json: &[u8]) -> Result<(), String> {
        if name.is_empty() {
            return Err("a session value needs a name".into());
        }
        serde_json::from_slice::<serde::de::IgnoredAny>(json)
            .map_err(|e| format!("the value of '{name}' is not JSON: {e}"))?;
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let others: usize = map.iter().filter(|(k, _)| k.as_str() != name).map(|(_, v)| v.len()).sum();
        if others + json.len() > SESSION_BYTES {
            return Err(format!(
                "keeping '{name}' ({} bytes) would take the session's values over {} MiB",
                json.len(),
                SESSION_BYTES >> 20
            ));
        }
        if !self.budget.take(json.len()) {
            return Err(format!(
                "keeping '{name}' ({} bytes) would take every session's values together over the gateway's \
                 bound (`session_values_memory_mib`): delete sessions you no longer need",
                json.len()
            ));
        }
        if let Some(old) = map.insert(name.to_owned(), json.into()) {
            self.budget.give_back(old.len());
        }
        if let Some((store, session)) = &self.record
            && let Err(e) = store.put_value(*session, name, json)
        {
            tracing::error!(session, "could not record session value '{name}': {e}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_values_come_back_and_results_are_not_recorded() {
        let store = Arc::new(Store::in_memory().unwrap());
        let budget = Budget::new(1 << 20);
        let values = Values::recorded(store.clone(), 7, budget.clone());
        values.set("a", b"[1, 2]").unwrap();
        values.keep_result(0, &serde_json::json!([3]));
        let again = Values::restored(store.clone(), 7, budget.clone());
        assert_eq!(&*again.get("a").unwrap(), b"[1, 2]");
        assert!(again.get("result_0").is_none(), "results are rebuilt from outputs, not recorded");
        assert!(Values::restored(store, 8, budget).get("a").is_none(), "per session");
    }

    #[test]
    fn every_session_s_values_share_the_gateway_s_bound() {
        let budget = Budget::new(100);
        let (one, two) = (Values::in_memory(budget.clone()), Values::in_memory(budget.clone()));
        one.set("a", &[b'1'; 60]).unwrap();
        let refused = two.set("b", &[b'2'; 60]).unwrap_err();
        assert!(refused.contains("session_values_memory_mib"), "{refused}");
        two.keep_result_text(0, &[b'3'; 60]);
        assert!(two.get("result_0").is_none(), "a result past the bound is not kept");
        // Replacing a value gives its old bytes back; a closed session gives back all of its own.
        one.set("a", &[b'4'; 30]).unwrap();
        assert_eq!(budget.used(), 30);
        two.set("b", &[b'5'; 60]).unwrap();
        drop(one);
        assert_eq!(budget.used(), 60);
        drop(two);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn values_are_json_and_replace_each_other() {
        let values = Values::default();
        assert!(values.get("a").is_none());
        values.set("a", b"[1, 2]").unwrap();
        values.set("a", b"{\"x\": 1}").unwrap();
        assert_eq!(&*values.get("a").unwrap(), b"{\"x\": 1}");
        assert!(values.set("b", b"{oops").unwrap_err().contains("not JSON"));
        assert!(values.set("", b"1").is_err());
    }
}
