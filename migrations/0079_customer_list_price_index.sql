-- no-transaction
-- The customer list filtered by a price (see 0078).
CREATE INDEX CONCURRENTLY IF NOT EXISTS customer_list_price_mrr_idx ON customer_list (price_id, mrr_top DESC, tenant_id DESC) WHERE price_id IS NOT NULL;
