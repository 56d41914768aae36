-- hookd's PostgreSQL schema, version 8: events carry their owner (the provider's customer),
-- and so do their deliveries, live and finished, for listings by owner and for erasing one
-- owner's data. Rows written before version 8 have none: they are unowned. hookd_claim is
-- unchanged, so a node still running version 7 works on; this version's nodes call
-- hookd_claim_owned (below), which adds each claimed delivery's owner.
ALTER TABLE hookd_events ADD COLUMN IF NOT EXISTS owner text;
ALTER TABLE hookd_queue ADD COLUMN IF NOT EXISTS owner text;
ALTER TABLE hookd_done ADD COLUMN IF NOT EXISTS owner text;
-- Erasure and listings find one owner's events without reading the others.
CREATE INDEX IF NOT EXISTS hookd_events_owner ON hookd_events (owner) WHERE owner IS NOT NULL;

-- Claims with each delivery's owner: hookd_claim's rows (version 7's, unchanged for nodes still
-- running it), each with its owner read by primary key. The owner is read by a statement of
-- its own, after the claim: its snapshot sees every row the claim saw (one read in the same
-- statement as the claim could miss a row committed between the two). The last row (no id)
-- has none.
CREATE OR REPLACE FUNCTION hookd_claim_owned(
    p_now bigint, p_subs text[], p_limits bigint[], p_adhoc_room bigint, p_room bigint,
    p_lease_ms bigint, p_rates bigint[])
RETURNS TABLE (id text, event_id text, event_type text, subscription text, bucket text,
               adhoc_url text, adhoc_secret text, attempts integer, created_ms bigint,
               last_error text, lease_token bigint, body bytea, now_ms bigint, next_ms bigint,
               owner text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    r record;
BEGIN
    FOR r IN SELECT * FROM hookd_claim(p_now, p_subs, p_limits, p_adhoc_room, p_room, p_lease_ms, p_rates) LOOP
        id := r.id; event_id := r.event_id; event_type := r.event_type;
        subscription := r.subscription; bucket := r.bucket; adhoc_url := r.adhoc_url;
        adhoc_secret := r.adhoc_secret; attempts := r.attempts; created_ms := r.created_ms;
        last_error := r.last_error; lease_token := r.lease_token; body := r.body;
        now_ms := r.now_ms; next_ms := r.next_ms;
        owner := NULL;
        IF r.id IS NOT NULL THEN
            SELECT q.owner INTO owner FROM hookd_queue q WHERE q.id = r.id;
        END IF;
        RETURN NEXT;
    END LOOP;
END;
$$;
