-- no-transaction
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS usage_ledger_id_minute_idx ON usage_ledger (id, usage_minute);
