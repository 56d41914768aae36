-- hookd's PostgreSQL schema, version 8: events carry their owner (the provider's customer),
-- and so do their deliveries, live and finished, for listings by owner and for erasing one
-- owner's data. Rows written before version 8 have none: they are unowned. hookd_claim is
-- unchanged (claims do not need the owner), so a node still running version 7 works on.
ALTER TABLE hookd_events ADD COLUMN IF NOT EXISTS owner text;
ALTER TABLE hookd_queue ADD COLUMN IF NOT EXISTS owner text;
ALTER TABLE hookd_done ADD COLUMN IF NOT EXISTS owner text;
-- Erasure and listings find one owner's events without reading the others.
CREATE INDEX IF NOT EXISTS hookd_events_owner ON hookd_events (owner) WHERE owner IS NOT NULL;
