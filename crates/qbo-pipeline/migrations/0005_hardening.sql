-- Hardening.
--
-- Tokens: the refresh token a rotation replaced is kept (Intuit keeps it valid for about a
-- day after issuing its successor), so a successor that Intuit refuses (lost, mangled) can
-- fall back to it. Token values may be stored encrypted (`enc:v1:` prefix) when
-- QBO_TOKEN_KEY is configured, and the seed as a SHA-256 digest (`sha256:` prefix).
ALTER TABLE qbo_pipeline.oauth_tokens
    ADD COLUMN previous_refresh_token text,
    ADD COLUMN rotated_at timestamptz;
-- Nobody but the owning role reads the tokens (no grant to PUBLIC, now or by accident).
REVOKE ALL ON qbo_pipeline.oauth_tokens FROM PUBLIC;
REVOKE ALL ON SCHEMA qbo_pipeline FROM PUBLIC;

-- Records whose JSON jsonb cannot hold (a \u0000 escape, a lone UTF-16 surrogate): the
-- exact text QBO sent goes to `payload_text`, and `payload` holds the same document with
-- those characters replaced by U+FFFD. NULL for every ordinary record.
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['qb_customers', 'qb_invoices', 'qb_items'] LOOP
        EXECUTE format('ALTER TABLE raw.%I ADD COLUMN payload_text text', t);
    END LOOP;
END
$$;
ALTER TABLE qbo_pipeline.run_entities ADD COLUMN records_sanitised bigint NOT NULL DEFAULT 0;
