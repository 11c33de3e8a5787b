-- What happened to a job an app service queued (POST /v1/jobs): queued, running, retrying
-- (with the next attempt's time), done, or dead (with the last error), readable by the tenant
-- that queued it (GET /v1/jobs/{id}) and no other. Only intake jobs are tracked, so the fleet's
-- own jobs (webhooks, flushes) pay nothing for it. Rows are pruned after their retention.
CREATE TABLE job_status (
    id                  text PRIMARY KEY,
    tenant_id           uuid NOT NULL REFERENCES tenants (id),
    kind                text NOT NULL,
    state               text NOT NULL CHECK (state IN ('queued', 'running', 'retrying', 'done', 'dead')),
    attempts            integer NOT NULL DEFAULT 0,
    last_error          text,
    next_attempt_at     timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    started_at          timestamptz,
    finished_at         timestamptz
);
CREATE INDEX job_status_tenant_id_idx ON job_status (tenant_id);
CREATE INDEX job_status_finished_idx ON job_status (finished_at) WHERE finished_at IS NOT NULL;

ALTER TABLE job_status ENABLE ROW LEVEL SECURITY;
ALTER TABLE job_status FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON job_status
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);
