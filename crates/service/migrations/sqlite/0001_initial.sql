-- Conversations, their audit trail, webhook events and the job queue (SQLite).
CREATE TABLE threads (
    page_id TEXT NOT NULL,
    psid TEXT NOT NULL,
    state TEXT NOT NULL,
    owner_app_id TEXT,
    session TEXT,
    snapshot TEXT,
    last_user_msg_at INTEGER,
    last_agent_msg_at INTEGER,
    pending_welcome TEXT,
    return_reason TEXT,
    human_since INTEGER,
    last_error TEXT,
    state_since INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (page_id, psid)
);
CREATE INDEX threads_state ON threads (state, state_since);

CREATE TABLE transitions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    page_id TEXT NOT NULL,
    psid TEXT NOT NULL,
    from_state TEXT NOT NULL,
    to_state TEXT NOT NULL,
    cause TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX transitions_thread ON transitions (page_id, psid, id);

CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    page_id TEXT NOT NULL,
    dedupe_key TEXT NOT NULL,
    psid TEXT NOT NULL,
    kind TEXT NOT NULL,
    channel TEXT NOT NULL,
    payload TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    UNIQUE (page_id, dedupe_key)
);

CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    thread_key TEXT,
    page_id TEXT,
    psid TEXT,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    ord INTEGER NOT NULL,
    run_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    lease_until INTEGER,
    locked_by TEXT,
    singleton TEXT UNIQUE,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    finished_at INTEGER
);
CREATE INDEX jobs_due ON jobs (status, run_at);
CREATE INDEX jobs_thread ON jobs (thread_key, status, ord);
CREATE INDEX jobs_page_psid ON jobs (page_id, psid, status);
