-- Time partitions, outbound webhook deliveries, step 2: the bounds checked against every row,
-- under SHARE UPDATE EXCLUSIVE (deliveries and their attempts go on being written).
ALTER TABLE webhook_deliveries VALIDATE CONSTRAINT webhook_deliveries_legacy_bound;
ALTER TABLE webhook_attempts VALIDATE CONSTRAINT webhook_attempts_legacy_bound;
