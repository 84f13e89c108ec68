-- Call-back hours and scheduled call-backs: a pending call-back is not dialled before
-- `due_at` (the slot the caller chose, the next opening of the call-back hours, or the
-- end of a retry wait).  NULL: as soon as its turn comes.  On start the router parks
-- each restored call-back until then (and until the hours are open).
ALTER TABLE callbacks ADD COLUMN due_at timestamptz NULL;
