-- Triggers belong to one company (realm). Before this, a trigger had no realm and a scheduler
-- ran every due trigger against the company of its own QBO_REALM_ID, so two schedulers of
-- two companies sharing a database ran each other's triggers against the wrong company.
--
-- Existing triggers are assigned a realm only when that is certain: when this database has
-- only ever worked with one company (every run and every stored token names the same realm).
-- Otherwise they keep a NULL realm, and no scheduler fires them until they are given one
-- (`qbo-pipeline trigger enable NAME --realm R`, or `trigger apply` with `realm:`).
ALTER TABLE qbo_pipeline.triggers ADD COLUMN realm_id text;

UPDATE qbo_pipeline.triggers SET realm_id = sole.realm_id
FROM (
    SELECT min(realm_id) AS realm_id
    FROM (SELECT realm_id FROM qbo_pipeline.runs
          UNION SELECT realm_id FROM qbo_pipeline.oauth_tokens) AS known
    HAVING count(DISTINCT realm_id) = 1
) AS sole
WHERE qbo_pipeline.triggers.realm_id IS NULL;

DROP INDEX IF EXISTS qbo_pipeline.triggers_due_idx;
CREATE INDEX triggers_due_idx ON qbo_pipeline.triggers (realm_id, next_fire_at) WHERE status = 'active';
