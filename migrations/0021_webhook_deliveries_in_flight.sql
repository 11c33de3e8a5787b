-- A tenant's undelivered deliveries: the intake sums their bytes before accepting a message
-- (the per-tenant bound on bytes in flight). Partial, so it holds only the pending rows, not
-- the thirty days of finished ones.
CREATE INDEX webhook_deliveries_in_flight_idx ON webhook_deliveries (tenant_id) WHERE status = 'pending';
