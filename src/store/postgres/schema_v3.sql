-- hookd's PostgreSQL schema, version 3: the circuit breaker's state per subscription.
ALTER TABLE hookd_subscription_state
    ADD COLUMN IF NOT EXISTS failing_since_ms bigint,
    ADD COLUMN IF NOT EXISTS disabled_ms bigint,
    ADD COLUMN IF NOT EXISTS disabled_reason text;
