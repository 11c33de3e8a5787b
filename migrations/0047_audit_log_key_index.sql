-- no-transaction
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS audit_log_id_at_idx ON audit_log (id, at);
