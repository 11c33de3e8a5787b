-- swap step: usage_ledger keeps its name and columns (releases from 0.2.0 on write it with ON CONFLICT (id, usage_minute), which the partitioned table's key serves); the old heap, renamed, becomes its first partition
-- required stop: 0.2.0: a member before 0.2.0 flushes usage with ON CONFLICT (id), a key the partitioned ledger cannot have, and every flush of it would fail
--
-- Time partitions, the usage ledger, step 3: partitioned by month of usage_minute. Nothing here
-- scans or copies a row: the old heap is attached below the bound steps 1 and 2 declared and
-- validated, its (id, usage_minute) key is the index 0049 built concurrently, and its other
-- indexes and foreign key are taken over as they are.
SET LOCAL lock_timeout = '5s';

ALTER TABLE usage_ledger RENAME TO usage_ledger_legacy;
ALTER TABLE usage_ledger_legacy RENAME CONSTRAINT usage_ledger_tenant_id_fkey TO usage_ledger_legacy_tenant_id_fkey;
ALTER TABLE usage_ledger_legacy DROP CONSTRAINT usage_ledger_pkey;
ALTER TABLE usage_ledger_legacy ADD CONSTRAINT usage_ledger_legacy_pkey PRIMARY KEY USING INDEX usage_ledger_id_minute_idx;

CREATE TABLE usage_ledger (
    id                  uuid NOT NULL,
    tenant_id           uuid NOT NULL,
    metric              text NOT NULL,
    usage_minute        timestamptz NOT NULL,
    flush_id            text NOT NULL,
    quantity            bigint NOT NULL CONSTRAINT usage_ledger_quantity_check CHECK (quantity > 0),
    created_at          timestamptz NOT NULL DEFAULT now(),
    report_status       text NOT NULL DEFAULT 'pending'
                        CONSTRAINT usage_ledger_report_status_check CHECK (report_status IN ('pending', 'reported', 'dead')),
    report_error        text,
    reported_at         timestamptz,
    PRIMARY KEY (id, usage_minute),
    CONSTRAINT usage_ledger_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants (id)
) PARTITION BY RANGE (usage_minute);
CREATE INDEX usage_ledger_tenant_idx ON usage_ledger (tenant_id, metric, usage_minute);
CREATE INDEX usage_ledger_pending_created_idx ON usage_ledger (created_at) WHERE report_status = 'pending';
ALTER TABLE usage_ledger ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_ledger FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON usage_ledger
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);

DO $$
DECLARE
    bound timestamptz;
BEGIN
    SELECT (regexp_match(pg_get_constraintdef(oid), '''([^'']+)'''))[1]::timestamptz INTO bound
    FROM pg_constraint WHERE conname = 'usage_ledger_legacy_bound';
    EXECUTE format('ALTER TABLE usage_ledger ATTACH PARTITION usage_ledger_legacy FOR VALUES FROM (MINVALUE) TO (%L)', bound);
    PERFORM ballast_partition_create('usage_ledger', bound, bound + interval '1 month');
    PERFORM ballast_partition_create('usage_ledger', bound + interval '1 month', bound + interval '2 months');
END $$;
