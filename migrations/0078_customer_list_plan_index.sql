-- no-transaction
-- The customer list filtered by plan (`plan=…` names a plan of policy/plans.toml or a price),
-- in MRR order: with 0079, a rare plan or price is found through the two indexes instead of
-- walking the MRR index past every other tenant.
CREATE INDEX CONCURRENTLY IF NOT EXISTS customer_list_plan_mrr_idx ON customer_list (plan_id, mrr_top DESC, tenant_id DESC) WHERE plan_id IS NOT NULL;
