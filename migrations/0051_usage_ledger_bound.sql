-- Time partitions, the usage ledger, step 1 (expand): every ledger row so far, and every row the
-- flush writes until the swap, is for a minute before the start of the month after tomorrow.
-- NOT VALID takes no scan; step 2 validates it without blocking writers, and step 3 attaches
-- the old heap below that bound on the strength of it.
DO $$
BEGIN
    EXECUTE format('ALTER TABLE usage_ledger ADD CONSTRAINT usage_ledger_legacy_bound CHECK (usage_minute < %L) NOT VALID',
                   date_trunc('month', now() + interval '1 day', 'UTC') + interval '1 month');
END $$;
