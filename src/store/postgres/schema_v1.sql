-- hookd's PostgreSQL schema, version 1. Applied by `hookd migrate` or on start, under an
-- advisory lock, inside one transaction.

CREATE TABLE IF NOT EXISTS hookd_meta (
    key   text PRIMARY KEY,
    value bytea NOT NULL
);

-- One row per accepted event. (request_id, status) is the idempotency key.
CREATE TABLE hookd_events (
    id          text PRIMARY KEY,
    request_id  text NOT NULL,
    status      text NOT NULL,
    event_type  text NOT NULL,
    fingerprint bytea NOT NULL,
    created_ms  bigint NOT NULL,
    body        bytea NOT NULL,
    deliveries  text[] NOT NULL,
    UNIQUE (request_id, status)
);
CREATE INDEX hookd_events_created ON hookd_events (created_ms);

-- The live queue: unfinished deliveries only, so it stays small. A claimed row is `leased` and
-- its due_ms is the lease's end: once that passes, the row is simply due again (no reaper).
-- Every claim bumps lease_token; an outcome is recorded only with the token of its claim.
CREATE TABLE hookd_queue (
    id           text PRIMARY KEY,
    event_id     text NOT NULL,
    event_type   text NOT NULL,
    subscription text NOT NULL,
    bucket       text NOT NULL,
    adhoc_url    text,
    adhoc_secret text,
    attempts     integer NOT NULL DEFAULT 0,
    created_ms   bigint NOT NULL,
    due_ms       bigint NOT NULL,
    leased       boolean NOT NULL DEFAULT false,
    lease_token  bigint NOT NULL DEFAULT 0,
    last_error   text,
    history      jsonb NOT NULL DEFAULT '[]'
) WITH (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.02,
        autovacuum_vacuum_threshold = 1000, autovacuum_vacuum_cost_delay = 0);
CREATE INDEX hookd_queue_due ON hookd_queue (due_ms);
CREATE INDEX hookd_queue_leased ON hookd_queue (bucket) WHERE leased;
CREATE INDEX hookd_queue_event ON hookd_queue (event_id);
CREATE INDEX hookd_queue_created ON hookd_queue (created_ms);

-- Finished deliveries, with their attempts (`history`), appended by finish time into one
-- partition per day: retention drops whole partitions.
CREATE TABLE hookd_done (
    id           text NOT NULL,
    event_id     text NOT NULL,
    event_type   text NOT NULL,
    subscription text NOT NULL,
    bucket       text NOT NULL,
    adhoc_url    text,
    adhoc_secret text,
    dead         boolean NOT NULL,
    attempts     integer NOT NULL,
    created_ms   bigint NOT NULL,
    finished_ms  bigint NOT NULL,
    last_error   text,
    history      jsonb NOT NULL
) PARTITION BY RANGE (finished_ms);
-- Rows of a day whose partition is not made yet (its creation waits for no one).
CREATE TABLE hookd_done_default PARTITION OF hookd_done DEFAULT;
CREATE INDEX hookd_done_id ON hookd_done (id);
CREATE INDEX hookd_done_event ON hookd_done (event_id);

CREATE TABLE hookd_subscription_state (
    subscription         text PRIMARY KEY,
    paused               boolean NOT NULL DEFAULT false,
    last_success_ms      bigint,
    last_failure_ms      bigint,
    consecutive_failures integer NOT NULL DEFAULT 0,
    last_error           text
);

-- Subscriptions created through the API: the [[subscription]] table as TOML.
CREATE TABLE hookd_subscriptions (
    id         text PRIMARY KEY,
    owner      text,
    toml       text NOT NULL,
    created_ms bigint NOT NULL,
    updated_ms bigint NOT NULL
);
