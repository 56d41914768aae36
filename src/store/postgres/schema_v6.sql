-- hookd's PostgreSQL schema, version 6: finished deliveries lose their index on event_id.
-- Every delivery wrote an entry into it when it finished; the two readers that wanted an
-- event's finished deliveries (export, and the sweep of events whose deliveries are all gone)
-- find them by id instead, through hookd_events.deliveries and the index on hookd_done (id).
DROP INDEX IF EXISTS hookd_done_event;
