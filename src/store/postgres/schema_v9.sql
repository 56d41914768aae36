-- hookd's PostgreSQL schema, version 9: the audit log (who created, changed, paused, rotated,
-- enabled, deleted what, and when). One row per entry; the id is `aud_` + a ULID, so its
-- byte order ("C" collation) is time order, and listings read it newest first by the primary
-- key. Nothing else reads or changes it: nodes still running version 8 work on.
CREATE TABLE IF NOT EXISTS hookd_audit (
    id text COLLATE "C" PRIMARY KEY,
    at_ms bigint NOT NULL,
    actor text NOT NULL,
    action text NOT NULL,
    kind text NOT NULL,
    object text NOT NULL,
    subscription text,
    owner text,
    detail text NOT NULL DEFAULT ''
);
-- A portal's listing reads one owner's entries without reading the others.
CREATE INDEX IF NOT EXISTS hookd_audit_owner ON hookd_audit (owner, id) WHERE owner IS NOT NULL;
