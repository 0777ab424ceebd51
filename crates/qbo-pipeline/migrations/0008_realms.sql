-- Companies (realms) as data. Every realm a deployment works on is registered here: the realm
-- of QBO_REALM_ID/QBO_REFRESH_TOKEN by itself (source 'env'), others by `realm add`
-- (source 'added') or `connect` (source 'connect'). All of them use the same Intuit app.
-- A realm's refresh token lives in qbo_pipeline.oauth_tokens as before.
CREATE TABLE qbo_pipeline.realms (
    realm_id    text        PRIMARY KEY,
    source      text        NOT NULL CHECK (source IN ('env', 'added', 'connect')),
    added_at    timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON qbo_pipeline.realms FROM PUBLIC;

-- Realms this database already worked with had their token stored from the environment.
INSERT INTO qbo_pipeline.realms (realm_id, source)
SELECT realm_id, 'env' FROM qbo_pipeline.oauth_tokens
ON CONFLICT DO NOTHING;
