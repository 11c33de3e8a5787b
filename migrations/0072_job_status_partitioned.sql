-- swap step: job_status keeps its name and columns (members from 0.8.0 on write and read it as before); the old heap, renamed, becomes its first partition
--
-- Time partitions, job statuses, step 5: partitioned by month of the time their id carries
-- (`id_at`), the key becoming (id, id_at) (the index 0070 built; `id_at` is a function of the
-- id, so no job has two rows). Nothing here scans or copies a row: the old heap is attached
-- below the bound 0068 declared and 0069 validated (which also proves `id_at` NOT NULL for its
-- key), and its indexes and foreign key are taken over as they are. A DEFAULT partition takes
-- what no month holds (an id without a time, -infinity, and the unfinished statuses a retired
-- month keeps); `job_status.prune` deletes from it and from the first partition.
SET LOCAL lock_timeout = '5s';
LOCK TABLE job_status IN ACCESS EXCLUSIVE MODE;

ALTER TABLE job_status RENAME TO job_status_legacy;
ALTER TABLE job_status_legacy DROP CONSTRAINT job_status_pkey;
ALTER TABLE job_status_legacy ADD CONSTRAINT job_status_legacy_pkey PRIMARY KEY USING INDEX job_status_id_id_at_idx;
ALTER TABLE job_status_legacy RENAME CONSTRAINT job_status_tenant_id_fkey TO job_status_legacy_tenant_id_fkey;
ALTER INDEX job_status_tenant_id_idx RENAME TO job_status_legacy_tenant_id_idx;
ALTER INDEX job_status_finished_idx RENAME TO job_status_legacy_finished_idx;
ALTER INDEX job_status_created_idx RENAME TO job_status_legacy_created_idx;
ALTER INDEX job_status_unfinished_idx RENAME TO job_status_legacy_unfinished_idx;

CREATE TABLE job_status (
    id                  text NOT NULL,
    tenant_id           uuid NOT NULL,
    kind                text NOT NULL,
    state               text NOT NULL
                        CONSTRAINT job_status_state_check CHECK (state IN ('queued', 'running', 'retrying', 'done', 'dead')),
    attempts            integer NOT NULL DEFAULT 0,
    last_error          text,
    next_attempt_at     timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    started_at          timestamptz,
    finished_at         timestamptz,
    attempt_log         jsonb NOT NULL DEFAULT '[]',
    id_at               timestamptz NOT NULL,
    PRIMARY KEY (id, id_at),
    CONSTRAINT job_status_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants (id)
) PARTITION BY RANGE (id_at);
CREATE INDEX job_status_tenant_id_idx ON job_status (tenant_id);
CREATE INDEX job_status_finished_idx ON job_status (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX job_status_created_idx ON job_status (created_at DESC, id DESC);
CREATE INDEX job_status_unfinished_idx ON job_status (id_at) WHERE finished_at IS NULL;

DO $$
DECLARE
    bound timestamptz;
BEGIN
    ALTER TABLE job_status ENABLE ROW LEVEL SECURITY;
    ALTER TABLE job_status FORCE ROW LEVEL SECURITY;
    CREATE POLICY tenant_isolation ON job_status
        USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
        WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);
    SELECT (regexp_match(pg_get_constraintdef(oid), '''([^'']+)'''))[1]::timestamptz INTO bound
    FROM pg_constraint WHERE conname = 'job_status_legacy_bound';
    EXECUTE format('ALTER TABLE job_status ATTACH PARTITION job_status_legacy FOR VALUES FROM (MINVALUE) TO (%L)', bound);
    PERFORM ballast_partition_create('job_status', bound, bound + interval '1 month');
    PERFORM ballast_partition_create('job_status', bound + interval '1 month', bound + interval '2 months');
    CREATE TABLE job_status_default PARTITION OF job_status DEFAULT;
    ALTER TABLE job_status_default ENABLE ROW LEVEL SECURITY;
    ALTER TABLE job_status_default FORCE ROW LEVEL SECURITY;
    CREATE POLICY tenant_isolation ON job_status_default
        USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
        WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);
END $$;
