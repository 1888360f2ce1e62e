-- Events: one row per record. `position` is (transaction id << 20) | index in the
-- transaction; see docs/design/postgres.md for why readers never skip a late commit.
CREATE TABLE events (
    position    bigint  PRIMARY KEY,
    stream      text    NOT NULL,
    revision    bigint  NOT NULL,
    event_id    uuid    NOT NULL,
    event_type  text    NOT NULL,
    category    text,
    is_json     boolean NOT NULL,
    data        bytea   NOT NULL,
    metadata    bytea   NOT NULL,
    created_us  bigint  NOT NULL,
    tombstone   boolean NOT NULL DEFAULT false,
    CONSTRAINT events_stream_revision UNIQUE (stream, revision)
);
CREATE INDEX events_category ON events (category, position) WHERE category IS NOT NULL;
CREATE INDEX events_event_type ON events (event_type, position);

-- One row per regular stream: its state and metadata, and `version`, which every write to
-- the stream or its `$$` metadata stream bumps (compare-and-set: the optimistic check).
CREATE TABLE streams (
    name           text    PRIMARY KEY,
    version        bigint  NOT NULL,
    last_revision  bigint,
    last_event_id  uuid,
    tombstoned     boolean NOT NULL DEFAULT false,
    meta_revision  bigint,
    meta_event_id  uuid,
    metadata       bytea
);

-- The visible prefix of the log: (bound, head). Every event with position < bound has
-- committed (or aborted) and no event below bound can commit later; head is the position
-- after the last such event. Appenders hold the shared advisory lock (k1, k2) from before
-- they get a transaction id until they end; the bound is the oldest of their transaction
-- ids, or the next transaction id when none runs. Each query below takes a new snapshot
-- (VOLATILE, READ COMMITTED), in this order: next xid, then the lock table, then the head.
CREATE FUNCTION visible_prefix(k1 integer, k2 integer, OUT bound bigint, OUT head bigint)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    next_xid bigint;
    oldest   bigint;
BEGIN
    SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint INTO next_xid;
    SELECT min(CASE
                   WHEN x > next_xid + 2147483648 THEN x - 4294967296
                   ELSE x
               END)
      INTO oldest
      FROM (SELECT (next_xid & ~4294967295::bigint) | t.transactionid::text::bigint AS x
              FROM pg_locks a
              JOIN pg_locks t ON t.virtualtransaction = a.virtualtransaction
             WHERE a.locktype = 'advisory'
               AND a.database = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND a.classid = k1::oid AND a.objid = k2::oid AND a.objsubid = 2
               AND t.locktype = 'transactionid' AND t.mode = 'ExclusiveLock' AND t.granted) writers;
    bound := least(next_xid, coalesce(oldest, next_xid)) << 20;
    SELECT coalesce(max(e.position) + 1, 0) INTO head FROM events e WHERE e.position < bound;
END
$$;
