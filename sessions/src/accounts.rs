//! Each user's compute: what their statements cost today (UTC), kept in the store so daily quotas
//! hold across restarts, and since the gateway started (for `/metrics`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tilegate_api::Usage;

use crate::metrics::sample;
use crate::store::{self, Store};

/// The account statements of sessions without an owner (authentication off) are charged to.
pub const ANONYMOUS: &str = "anonymous";

/// What a user's statements cost over some time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Spent {
    /// CPU seconds.
    pub cpu_seconds: f64,
    /// Tiles read.
    pub tiles_read: u64,
    /// Statements (and batches) finished.
    pub statements: u64,
}

impl Spent {
    fn add(&mut self, usage: Usage) {
        self.cpu_seconds += usage.cpu_seconds;
        self.tiles_read += usage.tiles_read;
        self.statements += 1;
    }
}

/// One user's account in memory.
#[derive(Debug, Default)]
struct Account {
    /// The day `today` is for (days since the epoch, UTC).
    day: i64,
    today: Spent,
    since_start: Spent,
}

/// One number of an account, as a metric's value.
type Field = fn(&Spent) -> String;

/// Every user's account.
pub struct Accounts {
    store: Arc<Store>,
    accounts: Mutex<BTreeMap<String, Account>>,
}

/// Today, in days since the epoch (UTC).
pub fn today() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| (d.as_secs() / 86_400) as i64)
}

impl Accounts {
    /// Accounts kept in `store`.
    pub fn new(store: Arc<Store>) -> Self {
        Self { store, accounts: Mutex::default() }
    }

    /// Charges one finished statement's `usage` to `user` (`None`: [`ANONYMOUS`]).
    pub fn charge(&self, user: Option<&str>, usage: Usage) {
        let user = user.unwrap_or(ANONYMOUS);
        let day = today();
        let cpu_ns = (usage.cpu_seconds * 1e9) as u64;
        let mut accounts = self.lock();
        let account = accounts.entry(user.to_owned()).or_default();
        // Read the day from the store before this statement is added to it.
        self.roll(user, account, day);
        store::warn(self.store.add_usage(user, day, cpu_ns, usage.tiles_read));
        account.today.add(usage);
        account.since_start.add(usage);
    }

    /// What `user` spent today (UTC).
    pub fn today(&self, user: &str) -> Spent {
        let mut accounts = self.lock();
        let account = accounts.entry(user.to_owned()).or_default();
        self.roll(user, account, today());
        account.today
    }

    /// Per-user counters since the gateway started, in Prometheus text format: every user's, or
    /// `only` one's.
    pub fn render(&self, out: &mut String, only: Option<&str>) {
        let accounts = self.lock();
        let series: [(&str, &str, Field); 3] = [
            ("tilegate_user_cpu_seconds_total", "CPU seconds of each user's statements", |s| s.cpu_seconds.to_string()),
            (
                "tilegate_user_tiles_read_total",
                "Tiles each user's statements read (from the cache or the stores)",
                |s| s.tiles_read.to_string(),
            ),
            ("tilegate_user_statements_total", "Statements and batches each user ran", |s| s.statements.to_string()),
        ];
        for (name, help, value) in series {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
            for (user, account) in accounts.iter().filter(|(user, _)| only.is_none_or(|o| o == user.as_str())) {
                let label = crate::metrics::labels(&[("user", user)]);
                sample(out, name, &label, value(&account.since_start));
            }
        }
    }

    /// Makes `account.today` today's, from the store when the day changed or was never read.
    fn roll(&self, user: &str, account: &mut Account, day: i64) {
        if account.day == day {
            return;
        }
        let [cpu_ns, tiles, statements] = self.store.usage(user, day).unwrap_or_else(|e| {
            tracing::warn!("reading {user}'s usage: {e}");
            [0; 3]
        });
        account.day = day;
        account.today = Spent { cpu_seconds: cpu_ns as f64 / 1e9, tiles_read: tiles, statements };
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Account>> {
        self.accounts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_survives_a_restart_and_users_stay_apart() {
        let store = Arc::new(Store::in_memory().unwrap());
        let accounts = Accounts::new(store.clone());
        accounts.charge(Some("ann"), Usage { cpu_seconds: 1.5, tiles_read: 10 });
        accounts.charge(Some("ann"), Usage { cpu_seconds: 0.5, tiles_read: 2 });
        accounts.charge(None, Usage { cpu_seconds: 0.25, tiles_read: 0 });
        assert_eq!(accounts.today("ann"), Spent { cpu_seconds: 2.0, tiles_read: 12, statements: 2 });
        assert_eq!(accounts.today("bob"), Spent::default());

        let restarted = Accounts::new(store);
        assert_eq!(restarted.today("ann"), Spent { cpu_seconds: 2.0, tiles_read: 12, statements: 2 });
        assert_eq!(restarted.today(ANONYMOUS).statements, 1);
        let mut out = String::new();
        accounts.render(&mut out, None);
        assert!(out.contains("tilegate_user_cpu_seconds_total{user=\"ann\"} 2\n"), "{out}");
        assert!(out.contains("tilegate_user_tiles_read_total{user=\"anonymous\"} 0\n"), "{out}");
    }
}
