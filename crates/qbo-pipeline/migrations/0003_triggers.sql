-- Triggers: when a pipeline runs by itself (`qbo-pipeline trigger ...`, `qbo-pipeline scheduler`).
--
-- The definition (pipeline, schedule, variables, declared status, retry policy) is what
-- `trigger create` / `trigger apply` wrote; the state columns are the scheduler's. A scheduler
-- claims a due trigger with SELECT ... FOR UPDATE SKIP LOCKED and holds a session advisory lock
-- on it while its run lasts: a scheduler that dies releases the lock with its connection, so the
-- trigger becomes claimable again and the next run resumes from the checkpoints.
CREATE TABLE qbo_pipeline.triggers (
    name                text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$'),
    pipeline            text        NOT NULL,
    kind                text        NOT NULL CHECK (kind IN ('once', 'cron')),
    once_at             timestamptz,
    cron                text,
    timezone            text        NOT NULL DEFAULT 'UTC',
    start_at            timestamptz,
    variables           jsonb       NOT NULL DEFAULT '{}'::jsonb,
    -- The status the definition asked for; `status` is the current one (a one-time trigger
    -- becomes inactive by itself once it ran; `trigger apply` of an unchanged definition keeps it so).
    declared_status     text        NOT NULL CHECK (declared_status IN ('active', 'inactive')),
    max_attempts        integer     NOT NULL DEFAULT 3 CHECK (max_attempts BETWEEN 1 AND 100),
    retry_backoff_secs  integer     NOT NULL DEFAULT 60 CHECK (retry_backoff_secs BETWEEN 0 AND 86400),
    source              text        NOT NULL DEFAULT 'cli',

    status              text        NOT NULL CHECK (status IN ('active', 'inactive')),
    next_fire_at        timestamptz,
    attempts            integer     NOT NULL DEFAULT 0,
    claimed_at          timestamptz,
    claimed_by          text,
    last_run_id         bigint REFERENCES qbo_pipeline.runs (run_id) ON DELETE SET NULL,
    last_fired_at       timestamptz,
    last_finished_at    timestamptz,
    last_outcome        text CHECK (last_outcome IN ('succeeded', 'failed')),
    last_error          text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'once') = (once_at IS NOT NULL)),
    CHECK ((kind = 'cron') = (cron IS NOT NULL))
);
CREATE INDEX triggers_due_idx ON qbo_pipeline.triggers (next_fire_at) WHERE status = 'active';
