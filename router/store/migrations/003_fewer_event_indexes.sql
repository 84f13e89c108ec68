-- Every index on `events` is maintained on every COPY, and index upkeep is what
-- bounds ingest (PostgreSQL, not the writer).  (run, ts) served only the KPI
-- window bounds (min/max ts of a run), which (run, type, ts) answers too.
DROP INDEX IF EXISTS events_run_ts;
