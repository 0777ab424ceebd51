-- Validation reports: what `qbo-pipeline validate` found, where its evidence is, and the run
-- whose data it checked (the newest successful run at the time).
CREATE TABLE qbo_pipeline.validations (
    validation_id  bigserial PRIMARY KEY,
    run_id         bigint REFERENCES qbo_pipeline.runs (run_id) ON DELETE SET NULL,
    realm_id       text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    passed         boolean     NOT NULL,
    checks_failed  integer     NOT NULL,
    evidence_dir   text,
    report         jsonb       NOT NULL
);
CREATE INDEX validations_run_idx ON qbo_pipeline.validations (run_id);
