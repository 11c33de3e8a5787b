-- Every item of a subscription (price, product, quantity, metered), so the plan is found by
-- its price wherever Stripe lists it and add-ons count by quantity (issue 37).
ALTER TABLE subscriptions ADD COLUMN items jsonb NOT NULL DEFAULT '[]';

-- What follows a grant that ends: another subscription's grant that outlasts it, each with
-- its end ([{"enabled", "limit", "until"}]).
ALTER TABLE entitlements ADD COLUMN later jsonb NOT NULL DEFAULT '[]';
