-- no-transaction
-- The customer list filtered by its speaking subscription's status (`status=past_due`, or
-- `none`), in MRR order: a rare status found through this index instead of walking the MRR
-- index past every tenant without it (`ballast bench customers`: docs/performance.md). The
-- expression is the list's filter's own.
CREATE INDEX CONCURRENTLY IF NOT EXISTS customer_list_status_mrr_idx ON customer_list ((coalesce(subscription_status, 'none')), mrr_top DESC, tenant_id DESC);
