-- The dashboard: run logs and the indexes its reads need.
--
-- A run's log: the lines worth reading afterwards (starts, plans, changed chunks, warnings,
-- errors, throttles and retries of its company's requests, the outcome), not one per page or
-- request. Written in batches by each process's `run_log::RunLog` sink; shown on the
-- dashboard's run page. Deleted with its run.
CREATE TABLE qbo_pipeline.run_log (
    run_id  bigint      NOT NULL REFERENCES qbo_pipeline.runs (run_id) ON DELETE CASCADE,
    seq     bigint      NOT NULL,
    at      timestamptz NOT NULL,
    level   text        NOT NULL CHECK (level IN ('info', 'warn', 'error')),
    message text        NOT NULL,
    PRIMARY KEY (run_id, seq)
);

-- The dashboard's reads: a company's newest runs, and a pipeline's.
CREATE INDEX runs_realm_idx ON qbo_pipeline.runs (realm_id, run_id DESC);
CREATE INDEX runs_pipeline_idx ON qbo_pipeline.runs (pipeline, run_id DESC);
