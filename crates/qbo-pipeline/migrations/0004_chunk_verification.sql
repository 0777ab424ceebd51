-- Unchanged-chunk verification on re-runs.
--
-- `completed_at` is when a chunk's last page was committed. It survives the reset a new run of
-- a completed job makes, so the next run can prove a chunk unchanged instead of reading it
-- again: a chunk whose whole range lies before `completed_at` can only lose records (every
-- QBO write sets LastUpdatedTime to the time of the write), so QBO's COUNT of the range equal
-- to the rows stored for it means nothing changed. See src/backfill.rs.
ALTER TABLE qbo_pipeline.checkpoints ADD COLUMN completed_at timestamptz;
ALTER TABLE qbo_pipeline.run_entities ADD COLUMN chunks_verified integer NOT NULL DEFAULT 0;
