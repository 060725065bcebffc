//! Session lifetimes: Livy's `idleTimeout`, `ttl` and `heartbeatTimeoutInSecond`, and the reaper
//! that expires sessions — never one with a waiting or running statement.
//!
//! An expired session turns `dead` with the reason as its last log line, takes no statements,
//! and stays visible for the retention period; then it is forgotten (404).

use std::sync::Weak;
use std::time::Duration;

use tilegate_api::SessionState;
use tokio::time::Instant;

use crate::Inner;

/// How often the reaper looks.
const TICK: Duration = Duration::from_secs(1);

/// A session's limits, from its request and the server's defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Expire after this long idle (no statement waiting or running, none submitted).
    pub(crate) idle: Option<Duration>,
    /// Expire this long after creation, once idle.
    pub(crate) ttl: Option<Duration>,
    /// Expire when no request for this session came for this long, once idle.
    pub(crate) heartbeat: Option<Duration>,
    /// Not a lifetime: the largest result a statement may return (its owner's limit).
    pub(crate) result_bytes: Option<usize>,
}

/// When a session was last active and last heard from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    pub(crate) created: Instant,
    pub(crate) active: Instant,
    pub(crate) heard: Instant,
    pub(crate) dead_since: Option<Instant>,
}

impl Clock {
    pub(crate) fn new() -> Self {
        let now = Instant::now();
        Self { created: now, active: now, heard: now, dead_since: None }
    }

    /// The clock of a session restored after a restart: its age and time dead carry over (wall
    /// clock), its idle and heartbeat timers start again.
    pub(crate) fn restored(created_ms: i64, dead_since_ms: Option<i64>) -> Self {
        let now = Instant::now();
        let wall = crate::session::now_ms();
        let ago =
            |ms: i64| now.checked_sub(Duration::from_millis(wall.saturating_sub(ms).max(0) as u64)).unwrap_or(now);
        Self { created: ago(created_ms), active: now, heard: now, dead_since: dead_since_ms.map(ago) }
    }
}

/// Why an idle session should expire now, if it should.
pub(crate) fn expiry(limits: &Limits, clock: &Clock, now: Instant) -> Option<String> {
    let over = |since: Instant, limit: Option<Duration>| limit.filter(|l| now.duration_since(since) >= *l);
    if let Some(l) = over(clock.created, limits.ttl) {
        return Some(format!("its ttl of {} passed", human(l)));
    }
    if let Some(l) = over(clock.active, limits.idle) {
        return Some(format!("it was idle for {}", human(l)));
    }
    if let Some(l) = over(clock.heard, limits.heartbeat) {
        return Some(format!("no request reached it for {} (heartbeatTimeoutInSecond)", human(l)));
    }
    None
}

/// Livy's duration strings: a number and a unit (`ms`, `s`, `m`/`min`, `h`, `d`), e.g. `10m`.
pub(crate) fn parse(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let unit = match unit.trim() {
        "ms" => Duration::from_millis(1),
        "s" | "sec" => Duration::from_secs(1),
        "m" | "min" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        "d" => Duration::from_secs(86_400),
        _ => return None,
    };
    unit.checked_mul(u32::try_from(n).ok()?)
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        _ if s >= 3600 && s.is_multiple_of(3600) => format!("{}h", s / 3600),
        _ if s >= 60 && s.is_multiple_of(60) => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

/// Expires sessions and forgets dead ones after `retention`, until the engine is dropped.
pub(crate) async fn reap(engine: Weak<Inner>, retention: Duration) {
    let mut tick = tokio::time::interval(TICK);
    loop {
        tick.tick().await;
        let Some(inner) = engine.upgrade() else { return };
        let now = Instant::now();
        let cells: Vec<_> = inner.sessions.iter().map(|e| e.value().clone()).collect();
        for cell in cells {
            let (state, clock) = {
                let data = cell.lock();
                (data.state, data.clock)
            };
            match state {
                SessionState::Idle => {
                    if let Some(reason) = expiry(&cell.limits, &clock, now) {
                        cell.expire(&reason);
                        tracing::info!(session = cell.id, "session expired: {reason}");
                    }
                }
                SessionState::Dead if clock.dead_since.is_some_and(|t| now.duration_since(t) >= retention) => {
                    inner.sessions.remove(&cell.id);
                    crate::store::warn(inner.store.delete_session(cell.id));
                    if let Some(name) = &cell.name {
                        inner.names.remove(name);
                    }
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn livy_durations() {
        assert_eq!(parse("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse("1d"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse("500ms"), Some(Duration::from_millis(500)));
        for bad in ["", "10", "m", "ten minutes", "-5m", "10 years"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
