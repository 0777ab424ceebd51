-- qbo-pipeline: the old project's validation queries, adjusted to this schema.
-- Paste into `psql "$DATABASE_URL"`. `qbo-pipeline validate` runs the same checks (and
-- reconciles with QBO's own counts); this file is for people who want to look by hand.

-- 1. Volumetry: rows per entity (inactive name-list records included).
SELECT 'qb_customers' AS table_name, count(*) AS rows,
       count(*) FILTER (WHERE payload->>'Active' = 'false') AS inactive
FROM raw.qb_customers
UNION ALL
SELECT 'qb_invoices', count(*), NULL FROM raw.qb_invoices
UNION ALL
SELECT 'qb_items', count(*), count(*) FILTER (WHERE payload->>'Active' = 'false') FROM raw.qb_items;

-- 2. Volumetry per extraction window (chunk), with first and last ingestion time.
SELECT 'qb_invoices' AS table_name, extract_window_start_utc, extract_window_end_utc, count(*) AS rows,
       min(ingested_at_utc) AS first_ingested, max(ingested_at_utc) AS last_ingested
FROM raw.qb_invoices
GROUP BY 2, 3
ORDER BY 2;
-- (repeat with raw.qb_customers and raw.qb_items)

-- 3. Duplicates: must return no rows (the primary key also forbids them).
SELECT realm_id, id, count(*) FROM raw.qb_invoices GROUP BY 1, 2 HAVING count(*) > 1;

-- 4. Null payloads: must be 0.
SELECT count(*) AS null_payloads FROM raw.qb_invoices WHERE payload IS NULL OR payload = 'null'::jsonb;

-- 5. The payload's Id equals the row's id: must return no rows.
SELECT id, payload->>'Id' AS payload_id FROM raw.qb_invoices WHERE payload->>'Id' IS DISTINCT FROM id LIMIT 20;

-- 6. Metadata columns complete: every count must be 0.
SELECT count(*) FILTER (WHERE ingested_at_utc IS NULL)           AS no_ingested_at,
       count(*) FILTER (WHERE extract_window_start_utc IS NULL)  AS no_window_start,
       count(*) FILTER (WHERE extract_window_end_utc IS NULL)    AS no_window_end,
       count(*) FILTER (WHERE page_number IS NULL)               AS no_page_number,
       count(*) FILTER (WHERE payload->'MetaData'->>'LastUpdatedTime' IS NULL) AS no_last_updated
FROM raw.qb_invoices;

-- 7. No ingestion time in the future: must be 0.
SELECT count(*) FROM raw.qb_invoices WHERE ingested_at_utc > (now() AT TIME ZONE 'UTC') + interval '5 minutes';

-- 8. Rows per LastUpdatedTime year, to compare with QBO's
--    `SELECT COUNT(*) FROM Invoice WHERE MetaData.LastUpdatedTime >= '...' AND MetaData.LastUpdatedTime <= '...'`.
SELECT date_trunc('year', source_last_updated_utc AT TIME ZONE 'UTC') AS year, count(*)
FROM raw.qb_invoices GROUP BY 1 ORDER BY 1;

-- 9. Freshness: newest record loaded, and the last successful run.
SELECT max(source_last_updated_utc) AS newest_last_updated FROM raw.qb_invoices;
SELECT run_id, pipeline, finished_at FROM qbo_pipeline.runs WHERE status = 'succeeded' ORDER BY run_id DESC LIMIT 1;

-- 10. Validations recorded by `qbo-pipeline validate`, with their evidence folders.
SELECT validation_id, run_id, created_at, passed, checks_failed, evidence_dir
FROM qbo_pipeline.validations ORDER BY validation_id DESC LIMIT 10;
