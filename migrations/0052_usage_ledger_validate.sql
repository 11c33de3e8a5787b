-- Time partitions, the usage ledger, step 2: the bound checked against every row, under SHARE
-- UPDATE EXCLUSIVE (writers and readers go on).
ALTER TABLE usage_ledger VALIDATE CONSTRAINT usage_ledger_legacy_bound;
