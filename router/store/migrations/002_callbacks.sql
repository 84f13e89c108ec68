-- Pending and finished call-backs: the durable state behind the engine's virtual
-- queue entries.  A row is written (and committed) when the caller accepts, before
-- they are told "we will call you back", so a crash right after loses nothing; its
-- status follows the callback.* events.  On start the router loads the pending and
-- dialing rows back in place order (joined_at).
CREATE TABLE callbacks (
    call_id     text PRIMARY KEY,
    queue       text NOT NULL,
    number      text NOT NULL,
    caller_id   text NOT NULL DEFAULT '',
    priority    integer NOT NULL DEFAULT 0,
    skills      jsonb NOT NULL DEFAULT '{}'::jsonb,
    joined_at   timestamptz NOT NULL,
    accepted_at timestamptz NOT NULL,
    attempts    integer NOT NULL DEFAULT 0,
    status      text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'dialing', 'completed', 'failed', 'cancelled')),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
-- one open call-back per number and queue, enforced by the database as well
CREATE UNIQUE INDEX callbacks_one_open_per_number ON callbacks (queue, number)
    WHERE status IN ('pending', 'dialing');
CREATE INDEX callbacks_open_in_place_order ON callbacks (joined_at) WHERE status IN ('pending', 'dialing');
