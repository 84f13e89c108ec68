-- The indexed text columns of `events` (run, type, call_id: the (run, type, ts) and
-- (call_id) indexes) compare bytewise (COLLATE "C") instead of by the database's
-- locale: every COPY compares them on each index insert, and the KPI SQL sorts and
-- skips over them.  They hold identifiers (run labels, event types, call ids), never
-- text for people, so only byte order makes sense for them; under C.UTF-8 (this
-- project's servers) the order is the same, under a linguistic locale such as
-- en_US.UTF-8 an ORDER BY over them now gives byte order.  Equality is unchanged.
-- Only the collation changes, so the table is not rewritten; the two indexes are
-- rebuilt (1.8 M events: 3 s, under an exclusive lock).  ALTER ... TYPE drops the
-- three columns' planner statistics, and no row changes, so neither autovacuum nor
-- the KPI's refresh_statistics would gather them again: without them the KPI SQL
-- took over 10 minutes instead of seconds on 1.8 M events.  Hence the ANALYZE.
ALTER TABLE events
    ALTER COLUMN run TYPE text COLLATE "C",
    ALTER COLUMN type TYPE text COLLATE "C",
    ALTER COLUMN call_id TYPE text COLLATE "C";
ANALYZE events (run, type, call_id);
