-- swap step: audit_log keeps its name and columns (the previous release writes and reads it as before); the old heap, renamed, becomes its first partition
--
-- Time partitions, step 3: the audit log becomes a table partitioned by month of `at`. Nothing
-- here scans or copies a row: the old heap is attached below the bound 0045 declared and 0046
-- validated, its (id, at) key is the unique index 0047 built concurrently, and its tenant index
-- and foreign key are taken over as they are. The one lock (the rename's) is held for
-- milliseconds, and for no more than 5 s of waiting behind another transaction.
SET LOCAL lock_timeout = '5s';

ALTER TABLE audit_log RENAME TO audit_log_legacy;
ALTER TABLE audit_log_legacy RENAME CONSTRAINT audit_log_tenant_id_fkey TO audit_log_legacy_tenant_id_fkey;
-- A partitioned table's key must hold its partition key. Ids keep counting from the last one
-- the old identity gave out (read from the sequence: the owner is held by the forced row-level
-- security like every role, and would see no row to take a max of).
DO $$
DECLARE
    last_id bigint := pg_sequence_last_value(pg_get_serial_sequence('audit_log_legacy', 'id')::regclass);
BEGIN
    ALTER TABLE audit_log_legacy ALTER COLUMN id DROP IDENTITY;
    CREATE SEQUENCE audit_log_id_seq AS bigint;
    PERFORM setval('audit_log_id_seq', coalesce(last_id, 0) + 1, false);
END $$;
ALTER TABLE audit_log_legacy DROP CONSTRAINT audit_log_pkey;
ALTER TABLE audit_log_legacy ADD CONSTRAINT audit_log_legacy_pkey PRIMARY KEY USING INDEX audit_log_id_at_idx;

CREATE TABLE audit_log (
    id                  bigint NOT NULL DEFAULT nextval('audit_log_id_seq'),
    tenant_id           uuid,
    actor               text NOT NULL,
    action              text NOT NULL,
    params              jsonb NOT NULL DEFAULT '{}',
    outcome             text NOT NULL,
    at                  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, at),
    CONSTRAINT audit_log_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants (id)
) PARTITION BY RANGE (at);
ALTER SEQUENCE audit_log_id_seq OWNED BY audit_log.id;
CREATE INDEX audit_log_tenant_idx ON audit_log (tenant_id);
ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_log FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_log
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);

DO $$
DECLARE
    bound timestamptz;
BEGIN
    SELECT (regexp_match(pg_get_constraintdef(oid), '''([^'']+)'''))[1]::timestamptz INTO bound
    FROM pg_constraint WHERE conname = 'audit_log_legacy_bound';
    EXECUTE format('ALTER TABLE audit_log ATTACH PARTITION audit_log_legacy FOR VALUES FROM (MINVALUE) TO (%L)', bound);
    -- The next two months; the `partitions` maintenance service keeps three months ahead.
    PERFORM ballast_partition_create('audit_log', bound, bound + interval '1 month');
    PERFORM ballast_partition_create('audit_log', bound + interval '1 month', bound + interval '2 months');
END $$;
