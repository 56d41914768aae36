-- hookd's PostgreSQL schema, version 7: a changed rate limit applies at once. hookd_rate
-- keeps, beside each bucket's next allowed attempt, the interval (µs) it was computed with; a
-- claim that passes another interval for the bucket counts from the last attempt's slot
-- instead (next_us - interval_us + the new interval), so that a raised limit does not wait out
-- the old one and allows no burst, and a lowered one holds at once. Rows written before
-- version 7 read interval_us 0: taken as the interval in force, as version 6 did. The
-- function's signature is version 4's, so a node still running version 6 calls this one
-- unchanged (and its sweep of old hookd_rate rows reads next_us only).
ALTER TABLE hookd_rate ADD COLUMN IF NOT EXISTS interval_us bigint NOT NULL DEFAULT 0;

CREATE OR REPLACE FUNCTION hookd_claim(
    p_now        bigint,   -- NULL: the database's clock
    p_subs       text[],   -- the runnable subscriptions ('adhoc': every per-request target)
    p_limits     bigint[], -- their max_in_flight ('adhoc': per host)
    p_adhoc_room bigint,   -- per-request attempts this node may start, all hosts together
    p_room       bigint,   -- attempts this node may start
    p_lease_ms   bigint,
    p_rates      bigint[]) -- their rate limits: µs between two attempts of a bucket; 0: none
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
    l_rates    bigint[];
    l_next     bigint[];
    t_us       bigint;
    i          integer;
    k          integer;
    lim        bigint;
    w_first    bigint;
    w_seen     bigint;
    w_last     bigint;
    nxt        bigint;
    rate_next  bigint;
    r_subs     text[] := '{}';
    r_rooms    bigint[] := '{}';
    room       bigint;
    a_first    bigint;
BEGIN
    t_us := t * 1000;
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
    -- Each subscription's room (one, when rate-limited); the per-request targets share theirs.
    FOR i IN 1 .. coalesce(array_length(p_subs, 1), 0) LOOP
        IF p_subs[i] = 'adhoc' THEN
            want := want + greatest(p_adhoc_room, 0);
        ELSE
            k := array_position(f_buckets, p_subs[i]);
            room := least(greatest(p_limits[i] - CASE WHEN k IS NULL THEN 0 ELSE f_counts[k] END, 0),
                          CASE WHEN coalesce(p_rates[i], 0) > 0 THEN 1 ELSE p_limits[i] END);
            IF room > 0 THEN
                r_subs := r_subs || p_subs[i];
                r_rooms := r_rooms || room;
                want := want + room;
            END IF;
        END IF;
    END LOOP;
    want := least(want, p_room);
    busy := full_b;
    IF want > 0 THEN
        SELECT coalesce(array_agg(c.id ORDER BY c.due_ms, c.id), '{}'),
               coalesce(array_agg(c.bucket ORDER BY c.due_ms, c.id), '{}'),
               coalesce(array_agg(c.subscription ORDER BY c.due_ms, c.id), '{}')
          INTO c_ids, c_buckets, c_subs
          FROM (SELECT x.id, x.bucket, x.subscription, x.due_ms
                FROM unnest(r_subs, r_rooms) AS r(s, n)
                CROSS JOIN LATERAL (SELECT q.id, q.bucket, q.subscription, q.due_ms FROM hookd_queue q
                                    WHERE q.subscription = r.s AND q.due_ms <= t
                                    ORDER BY q.due_ms LIMIT r.n FOR UPDATE SKIP LOCKED) x
                UNION ALL
                SELECT y.id, y.bucket, y.subscription, y.due_ms
                FROM (SELECT q.id, q.bucket, q.subscription, q.due_ms FROM hookd_queue q
                      WHERE 'adhoc' = ANY(p_subs) AND q.subscription = 'adhoc' AND q.due_ms <= t
                        AND q.bucket <> ALL(full_b)
                      ORDER BY q.due_ms LIMIT greatest(p_adhoc_room, 0) FOR UPDATE SKIP LOCKED) y) c;
        SELECT coalesce(array_agg(y.b), '{}') INTO l_buckets
          FROM (SELECT DISTINCT unnest(c_buckets) AS b) y
          WHERE pg_try_advisory_xact_lock(hashtextextended(y.b, 7));
        -- A statement of its own: its snapshot is taken after the locks.
        SELECT coalesce(array_agg((SELECT count(*) FROM hookd_queue q
                                   WHERE q.leased AND q.due_ms > t AND q.bucket = l.b)
                                  ORDER BY l.o), '{}')
          INTO l_counts
          FROM unnest(l_buckets) WITH ORDINALITY AS l(b, o);
        -- Each locked bucket's rate limit and the next attempt it allows (hookd_rate, read
        -- under the bucket's lock: no other claim changes it meanwhile), under that limit:
        -- one interval of it past the last attempt's slot.
        SELECT coalesce(array_agg(l.rate ORDER BY l.o), '{}'),
               coalesce(array_agg(coalesce(r.next_us - coalesce(nullif(r.interval_us, 0), l.rate) + l.rate, 0)
                                  ORDER BY l.o), '{}')
          INTO l_rates, l_next
          FROM (SELECT b.b, b.o, coalesce(p_rates[array_position(p_subs,
                            CASE WHEN b.b LIKE 'adhoc/%' THEN 'adhoc' ELSE b.b END)], 0) AS rate
                FROM unnest(l_buckets) WITH ORDINALITY AS b(b, o)) l
          LEFT JOIN hookd_rate r ON r.bucket = l.b;
        -- In candidate order: within each locked bucket's room (one, when its rate limit
        -- allows an attempt now, for a rate-limited one), then within the per-request room,
        -- then within the node's.
        SELECT coalesce(array_agg(z.id ORDER BY z.o), '{}'), coalesce(array_agg(z.bucket), '{}')
          INTO chosen, chosen_b
          FROM (SELECT y.id, y.o, y.bucket
                FROM (SELECT x.id, x.o, x.sub, x.bucket,
                             count(*) FILTER (WHERE x.sub = 'adhoc') OVER (ORDER BY x.o) AS adhoc_n
                      FROM (SELECT c.id, c.o, c.sub, c.bucket, l.n, l.rate, l.next_us,
                                   row_number() OVER (PARTITION BY c.bucket ORDER BY c.o) AS rn,
                                   p_limits[array_position(p_subs, c.sub)] AS lim
                            FROM unnest(c_ids, c_buckets, c_subs) WITH ORDINALITY AS c(id, bucket, sub, o)
                            JOIN unnest(l_buckets, l_counts, l_rates, l_next) AS l(b, n, rate, next_us)
                              ON l.b = c.bucket) x
                      WHERE x.n + x.rn <= x.lim
                        AND (x.rate = 0 OR (x.rn = 1 AND x.next_us - x.rate / 2 <= t_us))) y
                WHERE y.sub <> 'adhoc' OR y.adhoc_n <= p_adhoc_room
                ORDER BY y.o LIMIT p_room) z;
        -- GCRA: next_us is a rate-limited bucket's theoretical arrival time; a turn may come
        -- half an interval early (so that a late turn does not slow the rate down), and each
        -- moves it one interval past itself or past now, after idle time (no banked burst).
        -- The interval is kept with it: a claim under another limit counts from the slot.
        INSERT INTO hookd_rate (bucket, next_us, interval_us)
          SELECT l.b, greatest(l.next_us, t_us) + l.rate, l.rate
          FROM unnest(l_buckets, l_rates, l_next) AS l(b, rate, next_us)
          WHERE l.rate > 0 AND l.b = ANY(chosen_b)
          ON CONFLICT (bucket) DO UPDATE SET next_us = excluded.next_us, interval_us = excluded.interval_us;
        -- A bucket another claim holds (another node's, at this instant) is that claim's to
        -- fill: it gives no next turn here, or the two nodes would take turns spinning on it.
        SELECT busy || coalesce(array_agg(DISTINCT c.b), '{}') INTO busy
          FROM unnest(c_buckets) AS c(b)
          WHERE c.b <> ALL(l_buckets);
        -- Rate-limited buckets give the next turn's time themselves, below.
        SELECT busy || coalesce(array_agg(l.b), '{}'),
               min(CASE WHEN l.b = ANY(chosen_b) THEN greatest(l.next_us, t_us) + l.rate ELSE l.next_us END
                   - l.rate / 2)
          INTO busy, rate_next
          FROM unnest(l_buckets, l_rates, l_next) AS l(b, rate, next_us)
          WHERE l.rate > 0;
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
        -- The next turn: the first row not in flight of each runnable subscription that is not
        -- busy (its leased rows are the most it passes over)...
        SELECT min(f.due) INTO w_first
          FROM unnest(p_subs) AS s(s)
          CROSS JOIN LATERAL (SELECT q.due_ms AS due FROM hookd_queue q
                              WHERE q.subscription = s.s AND NOT (q.leased AND q.due_ms > t)
                              ORDER BY q.due_ms LIMIT 1) f
          WHERE s.s <> 'adhoc' AND s.s <> ALL(busy);
        -- ...and of the per-request targets, within a window of their rows.
        IF 'adhoc' = ANY(p_subs) THEN
            SELECT min(w.due_ms) FILTER (WHERE w.bucket <> ALL(busy)), count(*), max(w.due_ms)
              INTO a_first, w_seen, w_last
              FROM (SELECT q.due_ms, q.bucket FROM hookd_queue q
                    WHERE q.subscription = 'adhoc' AND NOT (q.leased AND q.due_ms > t)
                    ORDER BY q.due_ms LIMIT 512) w;
            IF a_first IS NOT NULL THEN
                w_first := least(w_first, a_first);
            ELSIF w_seen >= 512 THEN
                -- Only rows that cannot run now in the window: none beyond it is due before its
                -- last one; the turn after an attempt frees a slot looks again.
                w_first := least(w_first, greatest(w_last, t + 100));
            END IF;
        END IF;
        nxt := w_first;
    END IF;
    IF rate_next IS NOT NULL THEN
        -- In ms, rounded up: not before the rate allows.
        nxt := least(coalesce(nxt, (rate_next + 999) / 1000), (rate_next + 999) / 1000);
    END IF;
    RETURN QUERY SELECT NULL::text, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text,
        NULL::text, NULL::integer, NULL::bigint, NULL::text, NULL::bigint, NULL::bytea, t, nxt;
END;
$$;
