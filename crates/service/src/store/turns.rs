//! Plain turns answered without a store write.
//!
//! This process remembers, for threads it wrote last, what a plain Dialogflow turn would find
//! there (`TurnFacts`). A turn those facts cover (same session, the user's last message stored
//! less than a minute ago, no welcome kept) is answered without touching the store. The facts
//! are updated inside every transaction that writes a thread, while it holds the thread's lock
//! (SQLite's write lock, PostgreSQL's row lock), so within one process they follow the commits
//! of each thread in order. Another replica's write is not seen here: it can make a covered
//! turn skip what it would have done for at most `TURN_TIME_RESOLUTION_MS` (a kept welcome
//! waits for the user's next turn after that). Handovers and returns never read these facts.

use quick_cache::sync::Cache;

use handover_core::Thread;
use handover_core::thread::thread_key;
use handover_core::turns::TurnFacts;

/// Threads remembered; beyond that the least useful are forgotten (a forgotten thread's next
/// turn is a write, as without this cache). Facts only cover turns within a minute of the last
/// write, so this is about the users active in any one minute (~200 bytes each).
const CAPACITY: usize = 20_000;

pub struct KnownTurns {
    facts: Cache<String, TurnFacts>,
}

impl Default for KnownTurns {
    fn default() -> Self {
        Self {
            facts: Cache::new(CAPACITY),
        }
    }
}

impl KnownTurns {
    /// A plain turn of `session` at `now` would change nothing worth writing.
    pub fn covers(&self, page_id: &str, psid: &str, session: &str, now: i64) -> bool {
        self.facts
            .get(thread_key(page_id, psid).as_str())
            .is_some_and(|facts| facts.cover(session, now))
    }

    /// Called with the thread as a transaction is about to write it, before its commit. If the
    /// commit then fails, the facts are ahead of the store for a turn or two: a covered turn
    /// skips a time the store lacks, which the next uncovered turn writes.
    pub fn written(&self, thread: &Thread) {
        let key = thread_key(&thread.account_id, &thread.user_id);
        match TurnFacts::of(thread) {
            Some(facts) => self.facts.insert(key, facts),
            None => {
                self.facts.remove(key.as_str());
            }
        }
    }
}

impl KnownTurns {
    /// After a transaction that wrote the thread failed: the next turn writes.
    pub fn forget(&self, page_id: &str, psid: &str) {
        self.facts.remove(thread_key(page_id, psid).as_str());
    }
}
