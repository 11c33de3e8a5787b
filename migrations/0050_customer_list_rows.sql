-- The customer list's rows (issue 41): one per tenant, kept by the database as its facts are
-- written, so a page reads an index in its sort order instead of aggregating every tenant's
-- subscriptions, grants and dunning cases (0.7 s a page at 100,000 tenants before). Expand-only.
--
-- Triggers keep it, not the writers: the facts are written by the webhook handlers, dunning,
-- the entitlements recompute, runbooks, reconcile and (during a deploy) the release before
-- this one, which knows nothing of this table. Row triggers, each refreshing only the part of
-- the row its table decides, and only when a column the list shows changed.
--
-- Tenants that existed before this migration get their row from the `customers.list_fill`
-- maintenance service, in batches, as the system role: a backfill here would run under the
-- owner role, which row-level security (FORCE) shows no tenant at all, and would hold the
-- trigger's locks on the facts' tables for its whole length.

CREATE TABLE customer_list (
    tenant_id           uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    -- The plan that grants the tenant's access (entitlements), the speaking subscription's
    -- price and Stripe status (none: no subscription).
    plan_id             text,
    price_id            text,
    subscription_status text,
    -- Monthly recurring revenue per currency (active and past-due subscriptions), and its
    -- largest currency's amount: the MRR sort key.
    mrr                 jsonb NOT NULL DEFAULT '{}',
    mrr_top             bigint NOT NULL DEFAULT 0,
    dunning             text NOT NULL DEFAULT 'none' CHECK (dunning IN ('none', 'open', 'restricted')),
    dunning_since       timestamptz,
    -- Whether the tenant has ever called the API (a tenant_activity row): the activity sort
    -- lists those that have not last, by id, through the partial index below.
    seen                boolean NOT NULL DEFAULT false
);
CREATE INDEX customer_list_mrr_idx ON customer_list (mrr_top DESC, tenant_id DESC);
CREATE INDEX customer_list_unseen_idx ON customer_list (tenant_id DESC) WHERE NOT seen;

-- The tenants in dunning by MRR (the operator's "who owes the most"), read without passing
-- the rest.
CREATE INDEX customer_list_dunning_mrr_idx ON customer_list (mrr_top DESC, tenant_id DESC) WHERE dunning IN ('open', 'restricted');

-- The list's text search (part of a name, an external id or a billing email) through trigram
-- indexes instead of reading every tenant. pg_trgm is a trusted extension (PostgreSQL 13+): the
-- database's owner may create it, and Debian's postgresql-15 package ships it. Without GIN's
-- pending list (fastupdate): tenants are written rarely, and a list not yet merged makes the
-- planner price the index above a whole read of the table.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX tenants_name_trgm_idx ON tenants USING gin (name gin_trgm_ops) WITH (fastupdate = off);
CREATE INDEX tenants_external_id_trgm_idx ON tenants USING gin (external_id gin_trgm_ops) WITH (fastupdate = off);
CREATE INDEX tenants_billing_email_trgm_idx ON tenants USING gin (billing_email gin_trgm_ops) WITH (fastupdate = off);

-- The other two sorts' orders, with the id as the tie-break the cursor carries.
CREATE INDEX tenants_created_at_id_idx ON tenants (created_at DESC, id DESC);
CREATE INDEX tenant_activity_last_seen_tenant_idx ON tenant_activity (last_seen_at DESC, tenant_id DESC);
-- Served by the index above (an index is never needed for the release before to be correct).
DROP INDEX tenant_activity_last_seen_idx;

ALTER TABLE customer_list ENABLE ROW LEVEL SECURITY;
ALTER TABLE customer_list FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON customer_list
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);

-- Recomputes the whole rows of `tenants` (distinct, in order) from their facts: the fill of
-- tenants from before this migration. Runs as the caller, as the triggers below do, so a
-- tenant's writer refreshes its own tenant's row under row-level security.
CREATE FUNCTION customer_list_refresh(ids uuid[]) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF cardinality(ids) = 0 THEN
        RETURN;
    END IF;
    -- Waits for another transaction refreshing the same tenants to commit; the statement below
    -- then reads with a snapshot of its own (read committed), which holds that transaction's
    -- facts. Without the wait, two writers of one tenant's facts would each write a row that
    -- misses the other's.
    PERFORM 1 FROM customer_list WHERE tenant_id = ANY (ids) ORDER BY tenant_id FOR UPDATE;
    INSERT INTO customer_list AS l (tenant_id, plan_id, price_id, subscription_status, mrr, mrr_top, dunning, dunning_since, seen)
    SELECT t.id, g.plan_id, s.price_id, s.status, coalesce(m.mrr, '{}'), coalesce(m.top, 0),
           CASE WHEN c.restricted THEN 'restricted' WHEN c.since IS NOT NULL THEN 'open' ELSE 'none' END, c.since,
           EXISTS (SELECT 1 FROM tenant_activity a WHERE a.tenant_id = t.id)
    FROM unnest(ids) AS t(id)
    LEFT JOIN LATERAL (
        SELECT status, price_id FROM subscriptions x WHERE x.tenant_id = t.id
        ORDER BY CASE WHEN status IN ('active', 'trialing', 'past_due') THEN 0 WHEN status = 'paused' THEN 1 ELSE 2 END,
                 stripe_updated_at DESC, id
        LIMIT 1
    ) s ON true
    LEFT JOIN LATERAL (
        SELECT plan_id FROM entitlements e WHERE e.tenant_id = t.id AND plan_id IS NOT NULL ORDER BY plan_id LIMIT 1
    ) g ON true
    LEFT JOIN LATERAL (
        SELECT jsonb_object_agg(currency, amount) AS mrr, max(amount) AS top
        FROM (SELECT mrr_currency AS currency, sum(mrr_minor)::bigint AS amount FROM subscriptions x
              WHERE x.tenant_id = t.id AND status IN ('active', 'past_due') AND mrr_currency IS NOT NULL
              GROUP BY mrr_currency) per_currency
    ) m ON true
    LEFT JOIN LATERAL (
        SELECT bool_or(restricted) AS restricted, min(opened_at) AS since FROM dunning_cases d
        WHERE d.tenant_id = t.id AND status = 'open'
    ) c ON true
    ON CONFLICT (tenant_id) DO UPDATE
        SET plan_id = EXCLUDED.plan_id, price_id = EXCLUDED.price_id, subscription_status = EXCLUDED.subscription_status,
            mrr = EXCLUDED.mrr, mrr_top = EXCLUDED.mrr_top, dunning = EXCLUDED.dunning, dunning_since = EXCLUDED.dunning_since,
            seen = EXCLUDED.seen
        WHERE (l.plan_id, l.price_id, l.subscription_status, l.mrr, l.mrr_top, l.dunning, l.dunning_since, l.seen)
              IS DISTINCT FROM (EXCLUDED.plan_id, EXCLUDED.price_id, EXCLUDED.subscription_status, EXCLUDED.mrr,
                                EXCLUDED.mrr_top, EXCLUDED.dunning, EXCLUDED.dunning_since, EXCLUDED.seen);
END $$;

-- One part of a tenant's row, after a write to that part's facts: `billing` (subscriptions),
-- `plan` (entitlements), `dunning` (dunning cases) or `seen` (API activity). Each part is read
-- only from its own facts, so two writers of different parts cannot undo each other, and two
-- of the same part wait for each other at the lock below. A row written to nothing new is not
-- written.
CREATE FUNCTION customer_list_refresh_part(tenant uuid, part text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    new_price text;
    new_status text;
    new_revenue jsonb;
    new_top bigint;
    new_plan text;
    new_restricts boolean;
    new_since timestamptz;
    new_called boolean;
BEGIN
    -- As in customer_list_refresh: wait for the other writer, then read what it committed.
    PERFORM 1 FROM customer_list WHERE tenant_id = tenant FOR UPDATE;
    IF NOT FOUND THEN
        -- A tenant from before 0050 that the fill has not reached yet: its whole row, now.
        PERFORM customer_list_refresh(ARRAY[tenant]);
        RETURN;
    END IF;
    IF part = 'billing' THEN
        SELECT x.price_id, x.status INTO new_price, new_status FROM subscriptions x WHERE x.tenant_id = tenant
        ORDER BY CASE WHEN x.status IN ('active', 'trialing', 'past_due') THEN 0 WHEN x.status = 'paused' THEN 1 ELSE 2 END,
                 x.stripe_updated_at DESC, x.id
        LIMIT 1;
        SELECT coalesce(jsonb_object_agg(currency, amount), '{}'), coalesce(max(amount), 0) INTO new_revenue, new_top
        FROM (SELECT mrr_currency AS currency, sum(mrr_minor)::bigint AS amount FROM subscriptions x
              WHERE x.tenant_id = tenant AND x.status IN ('active', 'past_due') AND mrr_currency IS NOT NULL
              GROUP BY mrr_currency) per_currency;
        UPDATE customer_list SET price_id = new_price, subscription_status = new_status, mrr = new_revenue, mrr_top = new_top
        WHERE tenant_id = tenant AND (price_id, subscription_status, mrr, mrr_top) IS DISTINCT FROM (new_price, new_status, new_revenue, new_top);
    ELSIF part = 'plan' THEN
        SELECT e.plan_id INTO new_plan FROM entitlements e WHERE e.tenant_id = tenant AND e.plan_id IS NOT NULL ORDER BY e.plan_id LIMIT 1;
        UPDATE customer_list SET plan_id = new_plan WHERE tenant_id = tenant AND plan_id IS DISTINCT FROM new_plan;
    ELSIF part = 'dunning' THEN
        SELECT bool_or(d.restricted), min(d.opened_at) INTO new_restricts, new_since FROM dunning_cases d WHERE d.tenant_id = tenant AND d.status = 'open';
        UPDATE customer_list
        SET dunning = CASE WHEN new_restricts THEN 'restricted' WHEN new_since IS NOT NULL THEN 'open' ELSE 'none' END, dunning_since = new_since
        WHERE tenant_id = tenant
          AND (dunning, dunning_since) IS DISTINCT FROM (CASE WHEN new_restricts THEN 'restricted' WHEN new_since IS NOT NULL THEN 'open' ELSE 'none' END, new_since);
    ELSE
        new_called := EXISTS (SELECT 1 FROM tenant_activity a WHERE a.tenant_id = tenant);
        UPDATE customer_list SET seen = new_called WHERE tenant_id = tenant AND seen IS DISTINCT FROM new_called;
    END IF;
END $$;

-- A row of a part's facts was written (the part is the trigger's argument).
CREATE FUNCTION customer_list_touched() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM customer_list_refresh_part(OLD.tenant_id, TG_ARGV[0]);
    ELSE
        PERFORM customer_list_refresh_part(NEW.tenant_id, TG_ARGV[0]);
    END IF;
    RETURN NULL;
END $$;

-- A new tenant is listed at once, with nothing yet to show (a statement trigger: a bulk insert
-- of tenants writes their rows in one statement).
CREATE FUNCTION customer_list_tenant_created() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO customer_list (tenant_id) SELECT id FROM new_rows ORDER BY id ON CONFLICT (tenant_id) DO NOTHING;
    RETURN NULL;
END $$;

CREATE TRIGGER customer_list_created AFTER INSERT ON tenants
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION customer_list_tenant_created();

-- Row triggers whose WHEN is checked without calling a function: the webhook path updates these
-- tables on most events, mostly in columns the list does not show. (A subscription's Stripe
-- time decides which of a tenant's subscriptions speaks for it, so it counts.)
CREATE TRIGGER customer_list_billing AFTER INSERT OR DELETE ON subscriptions
    FOR EACH ROW EXECUTE FUNCTION customer_list_touched('billing');
CREATE TRIGGER customer_list_billing_changed AFTER UPDATE ON subscriptions FOR EACH ROW
    WHEN ((OLD.status, OLD.price_id, OLD.mrr_minor, OLD.mrr_currency, OLD.stripe_updated_at)
          IS DISTINCT FROM (NEW.status, NEW.price_id, NEW.mrr_minor, NEW.mrr_currency, NEW.stripe_updated_at))
    EXECUTE FUNCTION customer_list_touched('billing');
CREATE TRIGGER customer_list_plan_added AFTER INSERT ON entitlements FOR EACH ROW WHEN (NEW.plan_id IS NOT NULL)
    EXECUTE FUNCTION customer_list_touched('plan');
CREATE TRIGGER customer_list_plan_removed AFTER DELETE ON entitlements FOR EACH ROW WHEN (OLD.plan_id IS NOT NULL)
    EXECUTE FUNCTION customer_list_touched('plan');
CREATE TRIGGER customer_list_plan_changed AFTER UPDATE ON entitlements FOR EACH ROW WHEN (OLD.plan_id IS DISTINCT FROM NEW.plan_id)
    EXECUTE FUNCTION customer_list_touched('plan');
CREATE TRIGGER customer_list_dunning_opened AFTER INSERT ON dunning_cases FOR EACH ROW WHEN (NEW.status = 'open')
    EXECUTE FUNCTION customer_list_touched('dunning');
CREATE TRIGGER customer_list_dunning_removed AFTER DELETE ON dunning_cases FOR EACH ROW WHEN (OLD.status = 'open')
    EXECUTE FUNCTION customer_list_touched('dunning');
CREATE TRIGGER customer_list_dunning_changed AFTER UPDATE ON dunning_cases FOR EACH ROW
    WHEN ((OLD.status, OLD.restricted, OLD.opened_at) IS DISTINCT FROM (NEW.status, NEW.restricted, NEW.opened_at))
    EXECUTE FUNCTION customer_list_touched('dunning');
-- The API's last-call times change every few seconds; only whether there is one is listed.
CREATE TRIGGER customer_list_seen AFTER INSERT OR DELETE ON tenant_activity
    FOR EACH ROW EXECUTE FUNCTION customer_list_touched('seen');
