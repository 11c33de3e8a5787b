-- Bulk operations (issue 39): an operator's change to a cohort of subscriptions at Stripe —
-- move to another price, pause or resume collection, cancel at period end. The operation and
-- its cohort are written before anything is sent, so a run that crashed half-way resumes with
-- the same cohort (not one selected again after some have moved) and the same idempotency
-- keys (`bulk_{operation}_{subscription}`): nothing is done twice.

-- Global: an operation spans tenants; the app role has no access.
CREATE TABLE bulk_operations (
    id                  uuid PRIMARY KEY,
    kind                text NOT NULL CHECK (kind IN ('move_price', 'pause_collection', 'resume_collection', 'cancel_at_period_end', 'keep_after_period_end')),
    -- The cohort and the change, as asked: an unfinished operation with the same kind and
    -- parameters is resumed rather than started again.
    params              jsonb NOT NULL,
    actor               text NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    finished_at         timestamptz
);
CREATE UNIQUE INDEX bulk_operations_unfinished_idx ON bulk_operations (kind, md5(params::text)) WHERE finished_at IS NULL;
REVOKE ALL ON bulk_operations FROM ballast_app;

-- One subscription of an operation's cohort. Tenant data: row-level security.
CREATE TABLE bulk_targets (
    operation_id        uuid NOT NULL REFERENCES bulk_operations (id) ON DELETE CASCADE,
    subscription_id     text NOT NULL,
    tenant_id           uuid NOT NULL REFERENCES tenants (id),
    state               text NOT NULL CHECK (state IN ('pending', 'done', 'failed')) DEFAULT 'pending',
    -- The subscription as the mirror held it when the cohort was chosen.
    before              jsonb NOT NULL,
    -- What Stripe answered (done), or why it refused (failed).
    after               jsonb,
    error               text,
    acted_at            timestamptz,
    PRIMARY KEY (operation_id, subscription_id)
);
CREATE INDEX bulk_targets_tenant_id_idx ON bulk_targets (tenant_id);

ALTER TABLE bulk_targets ENABLE ROW LEVEL SECURITY;
ALTER TABLE bulk_targets FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON bulk_targets
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);
