-- QBO API usage, aggregated: requests per realm, UTC day, endpoint (query, batch, cdc, read,
-- token) and outcome (ok, http_<status>, fault, transport). Each process adds its counts
-- every few seconds (`usage::UsageMeter`), so there is no row per request.
CREATE TABLE qbo_pipeline.api_usage (
    realm_id  text   NOT NULL,
    day       date   NOT NULL,
    endpoint  text   NOT NULL,
    outcome   text   NOT NULL,
    requests  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (realm_id, day, endpoint, outcome)
);
