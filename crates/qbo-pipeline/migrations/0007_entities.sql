-- Every entity of the catalogue (crates/qbo-entities): one raw table per entity beyond the
-- original three, with exactly their columns and index (0001 + 0005's payload_text), and a
-- deletion mark on all forty tables.
--
-- `deleted_at_utc`: when the pipeline learnt that QBO deleted the record (the incremental
-- sync sets it; NULL for every live record). The backfill never sets it.
DO $$
DECLARE
    t text;
    new_tables text[] := ARRAY[
        -- Name lists.
        'qb_accounts', 'qb_budgets', 'qb_classes', 'qb_company_currencies', 'qb_customer_types',
        'qb_departments', 'qb_employees', 'qb_journal_codes', 'qb_payment_methods',
        'qb_tax_agencies', 'qb_tax_codes', 'qb_tax_rates', 'qb_terms', 'qb_vendors',
        -- Transactions.
        'qb_bills', 'qb_bill_payments', 'qb_credit_card_payments', 'qb_credit_memos',
        'qb_deposits', 'qb_estimates', 'qb_inventory_adjustments', 'qb_journal_entries',
        'qb_payments', 'qb_purchases', 'qb_purchase_orders', 'qb_refund_receipts',
        'qb_reimburse_charges', 'qb_sales_receipts', 'qb_tax_payments', 'qb_time_activities',
        'qb_transfers', 'qb_vendor_credits',
        -- Others and singletons.
        'qb_attachables', 'qb_recurring_transactions', 'qb_exchange_rates', 'qb_company_info',
        'qb_preferences'
    ];
BEGIN
    FOREACH t IN ARRAY new_tables LOOP
        EXECUTE format($f$
            CREATE TABLE raw.%I (
                realm_id                  text        NOT NULL,
                id                        varchar(50) NOT NULL,
                payload                   jsonb       NOT NULL,
                ingested_at_utc           timestamp   NOT NULL,
                extract_window_start_utc  varchar(50),
                extract_window_end_utc    varchar(50),
                page_number               integer,
                source_last_updated_utc   timestamptz,
                sync_token                bigint,
                run_id                    bigint,
                payload_text              text,
                PRIMARY KEY (realm_id, id)
            )$f$, t);
        EXECUTE format('CREATE INDEX %I ON raw.%I (realm_id, source_last_updated_utc)',
                       t || '_last_updated_idx', t);
        IF current_setting('server_version_num')::int >= 140000 THEN
            BEGIN
                EXECUTE format('ALTER TABLE raw.%I ALTER COLUMN payload SET COMPRESSION lz4', t);
            EXCEPTION WHEN OTHERS THEN
                RAISE NOTICE 'lz4 compression unavailable for raw.%: %', t, SQLERRM;
            END;
        END IF;
    END LOOP;

    FOREACH t IN ARRAY ARRAY['qb_customers', 'qb_invoices', 'qb_items'] || new_tables LOOP
        EXECUTE format('ALTER TABLE raw.%I ADD COLUMN deleted_at_utc timestamp NULL', t);
    END LOOP;
END
$$;

-- Why an entity of a run was skipped (e.g. the company's edition lacks it).
ALTER TABLE qbo_pipeline.run_entities ADD COLUMN note text;
