-- Usage items as acknowledged. `POST /v1/usage` writes its items here before it answers, so
-- a crash of Redis (which keeps only the limit counters and a fast duplicate check) loses no
-- unit: PostgreSQL is the copy of money. The flush marks unflushed items with its id in the
-- same transaction that writes their ledger rows, so each item is billed once. Flushed items
-- stay 48 hours (the idempotency window is 24) and are then pruned by the flush.
CREATE TABLE usage_items (
    tenant_id           uuid NOT NULL REFERENCES tenants (id),
    idempotency_key     text NOT NULL,
    metric              text NOT NULL,
    quantity            bigint NOT NULL CHECK (quantity > 0),
    usage_minute        timestamptz NOT NULL,
    received_at         timestamptz NOT NULL,
    flush_id            text,
    PRIMARY KEY (tenant_id, idempotency_key)
);
CREATE INDEX usage_items_unflushed_idx ON usage_items (received_at) WHERE flush_id IS NULL;
CREATE INDEX usage_items_flushed_idx ON usage_items (received_at) WHERE flush_id IS NOT NULL;

ALTER TABLE usage_items ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_items FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON usage_items
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);

-- A flush now claims items, not an arrival window of Redis: the column keeps its meaning for
-- old rows and holds the claim's cut-off minute for new ones.
COMMENT ON COLUMN usage_flushes.arrival_window IS 'arrival minute claimed (Redis windows) or the cut-off minute (usage_items)';
