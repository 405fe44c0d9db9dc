-- Conversations, their audit trail, webhook events and the job queue (PostgreSQL).
CREATE TABLE threads (
    page_id TEXT NOT NULL,
    psid TEXT NOT NULL,
    state TEXT NOT NULL,
    owner_app_id TEXT,
    session TEXT,
    snapshot TEXT,
    last_user_msg_at BIGINT,
    last_agent_msg_at BIGINT,
    pending_welcome TEXT,
    return_reason TEXT,
    human_since BIGINT,
    last_error TEXT,
    state_since BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (page_id, psid)
);
CREATE INDEX threads_state ON threads (state, state_since);

CREATE TABLE transitions (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    page_id TEXT NOT NULL,
    psid TEXT NOT NULL,
    from_state TEXT NOT NULL,
    to_state TEXT NOT NULL,
    cause TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX transitions_thread ON transitions (page_id, psid, id);

CREATE TABLE events (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    page_id TEXT NOT NULL,
    dedupe_key TEXT NOT NULL,
    psid TEXT NOT NULL,
    kind TEXT NOT NULL,
    channel TEXT NOT NULL,
    payload TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    UNIQUE (page_id, dedupe_key)
);

CREATE TABLE jobs (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    thread_key TEXT,
    page_id TEXT,
    psid TEXT,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    ord BIGINT NOT NULL,
    run_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    lease_until BIGINT,
    locked_by TEXT,
    singleton TEXT UNIQUE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    finished_at BIGINT
);
CREATE INDEX jobs_due ON jobs (status, run_at);
CREATE INDEX jobs_thread ON jobs (thread_key, status, ord);
CREATE INDEX jobs_page_psid ON jobs (page_id, psid, status);
