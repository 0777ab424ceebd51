-- Incremental sync (`qbo-pipeline sync`, pipelines `qb_sync` and `qb_<entity>_sync`).
--
-- One row per (realm, entity) once a sync has started on it. `phase` 'full' while its first
-- load (all of its history, through the backfill engine's job `full_from`..`full_to`, with
-- its checkpoints) is not complete; 'incremental' after. `mark` is QBO's clock (a response's
-- `time`, never the local clock) at or before which every change of the entity has been
-- applied: the next sync reads what changed since `mark` minus a safety overlap. It is
-- committed in the same transaction as the rows it covers.
CREATE TABLE qbo_pipeline.sync_state (
    realm_id            text        NOT NULL,
    entity              text        NOT NULL,
    phase               text        NOT NULL CHECK (phase IN ('full', 'incremental', 'unavailable')),
    mark                timestamptz NOT NULL,
    full_from           date        NOT NULL,
    full_to             date        NOT NULL,
    full_completed_at   timestamptz,
    -- The last sync that finished this entity, and how it read it.
    last_sync_at        timestamptz,
    last_mode           text,
    last_run_id         bigint REFERENCES qbo_pipeline.runs (run_id) ON DELETE SET NULL,
    -- The last count proof: QBO's COUNT(*) and the live rows (deleted_at_utc IS NULL).
    last_proven_at      timestamptz,
    qbo_count           bigint,
    live_rows           bigint,
    -- The periodic re-read that catches changes QBO made without bumping LastUpdatedTime.
    last_reread_at      timestamptz,
    next_reread_at      timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (realm_id, entity)
);

-- Per run and entity: how a sync read it (full, cdc, query, verify, reread), the changes QBO
-- reported, and the rows it marked deleted.
ALTER TABLE qbo_pipeline.run_entities
    ADD COLUMN mode         text,
    ADD COLUMN changes      bigint,
    ADD COLUMN rows_deleted bigint;
