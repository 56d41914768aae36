-- hookd's PostgreSQL schema, version 2: a claim is one call of hookd_claim, one round trip.
--
-- hookd_claim leases the due deliveries this node may start now and returns them with their
-- events' bodies. Run as a statement of its own it is its own transaction, committed (durably)
-- before it returns; its advisory locks last until then. The steps:
--   1. the in-flight count of every bucket with live leases (a lease is live while due_ms, its
--      end, is ahead of now);
--   2. due rows of runnable buckets not at their limit, earliest due first, locked with
--      FOR UPDATE SKIP LOCKED, no more than the buckets have room for;
--   3. a transaction-scoped advisory lock per bucket among them (pg_try: a bucket another
--      claim holds is left for the next turn), then, in a statement of its own so that it sees
--      every claim committed before the lock, its in-flight count again;
--   4. the rows within the limits, leased (lease_token + 1, due_ms = now + lease);
--   5. when the next turn is due: the earliest row that could run, looked for among the first
--      512 rows of the due-time index only (a full bucket's backlog is not walked).
-- Every row but the last is a leased delivery; the last has a NULL id and carries now_ms (the
-- time the claim used) and next_ms.
-- Every index of the queue costs each ingest and each claim (a claim moves due_ms, so it
-- cannot be a HOT update). Listing orders by id (time-ordered), and an event's deliveries are
-- found by the ids its row keeps: these two only cost.
DROP INDEX IF EXISTS hookd_queue_created;
DROP INDEX IF EXISTS hookd_queue_event;

CREATE OR REPLACE FUNCTION hookd_claim(
    p_now        bigint,   -- NULL: the database's clock
    p_subs       text[],   -- the runnable subscriptions ('adhoc': every per-request target)
    p_limits     bigint[], -- their max_in_flight ('adhoc': per host)
    p_adhoc_room bigint,   -- per-request attempts this node may start, all hosts together
    p_room       bigint,   -- attempts this node may start
    p_lease_ms   bigint)
RETURNS TABLE (id text, event_id text, event_type text, subscription text, bucket text,
               adhoc_url text, adhoc_secret text, attempts integer, created_ms bigint,
               last_error text, lease_token bigint, body bytea, now_ms bigint, next_ms bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    t          bigint := coalesce(p_now, (extract(epoch from clock_timestamp()) * 1000)::bigint);
    f_buckets  text[];
    f_counts   bigint[];
    full_b     text[] := '{}';
    busy       text[];
    want       bigint := 0;
    c_ids      text[];
    c_buckets  text[];
    c_subs     text[];
    l_buckets  text[];
    l_counts   bigint[];
    chosen     text[] := '{}';
    chosen_b   text[] := '{}';
    i          integer;
    k          integer;
    lim        bigint;
    w_first    bigint;
    w_seen     bigint;
    w_last     bigint;
    nxt        bigint;
BEGIN
    SELECT coalesce(array_agg(x.b), '{}'), coalesce(array_agg(x.n), '{}')
      INTO f_buckets, f_counts
      FROM (SELECT q.bucket AS b, count(*) AS n FROM hookd_queue q
            WHERE q.leased AND q.due_ms > t GROUP BY q.bucket) x;
    FOR i IN 1 .. coalesce(array_length(f_buckets, 1), 0) LOOP
        k := array_position(p_subs, CASE WHEN f_buckets[i] LIKE 'adhoc/%' THEN 'adhoc' ELSE f_buckets[i] END);
        lim := CASE WHEN k IS NULL THEN 0 ELSE p_limits[k] END;
        IF f_counts[i] >= lim THEN
            full_b := full_b || f_buckets[i];
        END IF;
    END LOOP;
    FOR i IN 1 .. coalesce(array_length(p_subs, 1), 0) LOOP
        IF p_subs[i] = 'adhoc' THEN
            want := want + greatest(p_adhoc_room, 0);
        ELSE
            k := array_position(f_buckets, p_subs[i]);
            want := want + greatest(p_limits[i] - CASE WHEN k IS NULL THEN 0 ELSE f_counts[k] END, 0);
        END IF;
    END LOOP;
    want := least(want, p_room);
    busy := full_b;
    IF want > 0 THEN
        SELECT coalesce(array_agg(c.id ORDER BY c.due_ms, c.id), '{}'),
               coalesce(array_agg(c.bucket ORDER BY c.due_ms, c.id), '{}'),
               coalesce(array_agg(c.subscription ORDER BY c.due_ms, c.id), '{}')
          INTO c_ids, c_buckets, c_subs
          FROM (SELECT q.id, q.bucket, q.subscription, q.due_ms FROM hookd_queue q
                WHERE q.due_ms <= t AND q.subscription = ANY(p_subs) AND q.bucket <> ALL(full_b)
                ORDER BY q.due_ms LIMIT want FOR UPDATE SKIP LOCKED) c;
        SELECT coalesce(array_agg(y.b), '{}') INTO l_buckets
          FROM (SELECT DISTINCT unnest(c_buckets) AS b) y
          WHERE pg_try_advisory_xact_lock(hashtextextended(y.b, 7));
        -- A statement of its own: its snapshot is taken after the locks.
        SELECT coalesce(array_agg((SELECT count(*) FROM hookd_queue q
                                   WHERE q.leased AND q.due_ms > t AND q.bucket = l.b)
                                  ORDER BY l.o), '{}')
          INTO l_counts
          FROM unnest(l_buckets) WITH ORDINALITY AS l(b, o);
        -- In candidate order: within each locked bucket's room, then within the per-request
        -- room, then within the node's.
        SELECT coalesce(array_agg(z.id ORDER BY z.o), '{}'), coalesce(array_agg(z.bucket), '{}')
          INTO chosen, chosen_b
          FROM (SELECT y.id, y.o, y.bucket
                FROM (SELECT x.id, x.o, x.sub, x.bucket,
                             count(*) FILTER (WHERE x.sub = 'adhoc') OVER (ORDER BY x.o) AS adhoc_n
                      FROM (SELECT c.id, c.o, c.sub, c.bucket, l.n,
                                   row_number() OVER (PARTITION BY c.bucket ORDER BY c.o) AS rn,
                                   p_limits[array_position(p_subs, c.sub)] AS lim
                            FROM unnest(c_ids, c_buckets, c_subs) WITH ORDINALITY AS c(id, bucket, sub, o)
                            JOIN unnest(l_buckets, l_counts) AS l(b, n) ON l.b = c.bucket) x
                      WHERE x.n + x.rn <= x.lim) y
                WHERE y.sub <> 'adhoc' OR y.adhoc_n <= p_adhoc_room
                ORDER BY y.o LIMIT p_room) z;
        -- Buckets at their limit now: the next turn's time is not theirs to give.
        SELECT busy || coalesce(array_agg(l.b), '{}') INTO busy
          FROM unnest(l_buckets, l_counts) AS l(b, n)
          WHERE l.n + (SELECT count(*) FROM unnest(chosen_b) AS cb(b) WHERE cb.b = l.b)
                >= p_limits[array_position(p_subs, CASE WHEN l.b LIKE 'adhoc/%' THEN 'adhoc' ELSE l.b END)];
        IF array_length(chosen, 1) > 0 THEN
            RETURN QUERY
                WITH u AS (
                    UPDATE hookd_queue q
                    SET leased = true, lease_token = q.lease_token + 1, due_ms = t + p_lease_ms
                    WHERE q.id = ANY(chosen)
                    RETURNING q.id, q.event_id, q.event_type, q.subscription, q.bucket, q.adhoc_url,
                              q.adhoc_secret, q.attempts, q.created_ms, q.last_error, q.lease_token
                )
                SELECT u.id, u.event_id, u.event_type, u.subscription, u.bucket, u.adhoc_url,
                       u.adhoc_secret, u.attempts, u.created_ms, u.last_error, u.lease_token,
                       e.body, t, NULL::bigint
                FROM u JOIN hookd_events e ON e.id = u.event_id;
        END IF;
    END IF;
    IF coalesce(array_length(p_subs, 1), 0) > 0 AND p_room > 0 THEN
        SELECT min(w.due_ms) FILTER (WHERE w.subscription = ANY(p_subs) AND w.bucket <> ALL(busy)),
               count(*), max(w.due_ms)
          INTO w_first, w_seen, w_last
          FROM (SELECT q.due_ms, q.subscription, q.bucket FROM hookd_queue q
                WHERE NOT (q.leased AND q.due_ms > t)
                ORDER BY q.due_ms LIMIT 512) w;
        IF w_first IS NOT NULL THEN
            nxt := w_first;
        ELSIF w_seen >= 512 THEN
            -- Only rows that cannot run now in the window: none beyond it is due before its
            -- last one; the turn after an attempt frees a slot looks again.
            nxt := greatest(w_last, t + 100);
        END IF;
    END IF;
    RETURN QUERY SELECT NULL::text, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text,
        NULL::text, NULL::integer, NULL::bigint, NULL::text, NULL::bigint, NULL::bytea, t, nxt;
END;
$$;
