//! A session's named JSON values (`session().set/get` in the prelude), kept in memory for the
//! session's life.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tilegate_engine::Store;
use tilegate_sandbox::SessionValues;

/// All values of one session together may take this many bytes.
const SESSION_BYTES: usize = 256 << 20;

/// Results kept as `result_<id>` per session (the oldest go first), and the largest kept.
const KEPT_RESULTS: usize = 20;
const RESULT_BYTES: usize = 32 << 20;

/// One session's values: name → JSON text (checked to be JSON when set). Values set by snippets
/// are recorded in the state database when there is one (`result_<id>` are not: they are rebuilt
/// from the statements' outputs).
#[derive(Default)]
pub struct Values {
    map: Mutex<HashMap<String, Arc<[u8]>>>,
    record: Option<(Arc<Store>, u64)>,
}

impl std::fmt::Debug for Values {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Values").field("session", &self.record.as_ref().map(|(_, s)| s)).finish_non_exhaustive()
    }
}

impl Values {
    /// Values of session `session`, recorded in `store`, starting with what `store` holds for it.
    pub fn recorded(store: Arc<Store>, session: u64) -> Self {
        let stored = store.values(session).unwrap_or_else(|e| {
            tracing::error!(session, "could not read session values: {e}");
            Vec::new()
        });
        let map = stored.into_iter().map(|(name, json)| (name, Arc::from(json))).collect();
        Self { map: Mutex::new(map), record: Some((store, session)) }
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
            map.remove(&format!("result_{}", results.remove(0)));
        }
        let total: usize = map.values().map(|v| v.len()).sum();
        if total + bytes.len() <= SESSION_BYTES {
            map.insert(format!("result_{statement}"), Arc::from(bytes));
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
        map.insert(name.to_owned(), json.into());
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
        let values = Values::recorded(store.clone(), 7);
        values.set("a", b"[1, 2]").unwrap();
        values.keep_result(0, &serde_json::json!([3]));
        let again = Values::recorded(store.clone(), 7);
        assert_eq!(&*again.get("a").unwrap(), b"[1, 2]");
        assert!(again.get("result_0").is_none(), "results are rebuilt from outputs, not recorded");
        assert!(Values::recorded(store, 8).get("a").is_none(), "per session");
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
