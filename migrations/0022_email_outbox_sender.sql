-- The sender of an app service's email (POST /v1/jobs, email.send): the app sender under the
-- tenant's name. NULL for Ballast's own email (dunning, lifecycle), sent from the billing sender,
-- which no app email may use.
ALTER TABLE email_outbox ADD COLUMN from_address text;
