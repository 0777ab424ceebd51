-- Rows written and deleted per company and entity over every run, kept up to date by a
-- trigger on run_entities, for `/metrics` (qbo_records_written_total, qbo_records_deleted_total).
-- Summing run_entities at each scrape read every entity row of every run: with 100 companies
-- x 40 entities and 10,000 runs (361,000 rows) that query alone took ~130 ms of the scrape
-- (scripts/bench-web, docs/benchmarks.md "Dashboard and API"); this table holds 4,000 rows.
--
-- Exactly the sums of run_entities: an inserted row adds its figures (a zero row too, so the
-- series appears as before), an update adds the difference. Nothing deletes runs; should a
-- run's rows go (ON DELETE CASCADE), the totals keep them, as a Prometheus counter must never
-- go down. A company is worked by one process at a time (its advisory lock), so the totals
-- row of a (company, entity) is only ever updated by the run that already holds that
-- entity's run_entities row.
CREATE TABLE qbo_pipeline.entity_totals (
    realm_id      text   NOT NULL,
    entity        text   NOT NULL,
    rows_written  bigint NOT NULL DEFAULT 0,
    rows_deleted  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (realm_id, entity)
);
REVOKE ALL ON qbo_pipeline.entity_totals FROM PUBLIC;

CREATE FUNCTION qbo_pipeline.entity_totals_add() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    realm text;
    written bigint := coalesce(NEW.rows_written, 0);
    deleted bigint := coalesce(NEW.rows_deleted, 0);
BEGIN
    IF TG_OP = 'UPDATE' THEN
        written := written - coalesce(OLD.rows_written, 0);
        deleted := deleted - coalesce(OLD.rows_deleted, 0);
        IF written = 0 AND deleted = 0 THEN
            RETURN NULL;
        END IF;
    END IF;
    SELECT r.realm_id INTO realm FROM qbo_pipeline.runs r WHERE r.run_id = NEW.run_id;
    IF realm IS NULL THEN
        RETURN NULL;
    END IF;
    INSERT INTO qbo_pipeline.entity_totals AS t (realm_id, entity, rows_written, rows_deleted)
    VALUES (realm, NEW.entity, written, deleted)
    ON CONFLICT (realm_id, entity) DO UPDATE
        SET rows_written = t.rows_written + EXCLUDED.rows_written,
            rows_deleted = t.rows_deleted + EXCLUDED.rows_deleted;
    RETURN NULL;
END
$$;

CREATE TRIGGER run_entities_totals
    AFTER INSERT OR UPDATE OF rows_written, rows_deleted ON qbo_pipeline.run_entities
    FOR EACH ROW EXECUTE FUNCTION qbo_pipeline.entity_totals_add();

-- What the ledger holds already (the trigger exists from here on, in the same transaction).
INSERT INTO qbo_pipeline.entity_totals (realm_id, entity, rows_written, rows_deleted)
SELECT r.realm_id, e.entity, coalesce(sum(e.rows_written), 0), coalesce(sum(e.rows_deleted), 0)
FROM qbo_pipeline.run_entities e JOIN qbo_pipeline.runs r USING (run_id)
GROUP BY 1, 2;
