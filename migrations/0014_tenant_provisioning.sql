-- Tenants are provisioned through the API (POST /v1/tenants): the app's own id for the
-- tenant makes a repeated request return the same tenant, and the billing email is where
-- Stripe and Ballast write to. A tenant row exists before its Stripe customer does (the row
-- commits first, so a crash after the Stripe call loses neither; the customer is bound when
-- the call returns, or by its customer.created event, which names the tenant).
ALTER TABLE tenants ADD COLUMN external_id text UNIQUE;
ALTER TABLE tenants ADD COLUMN billing_email text;
ALTER TABLE tenants ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();
