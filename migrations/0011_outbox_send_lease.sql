-- The email send no longer holds the outbox row's lock while the SMTP relay answers: it claims
-- the row for a lease in one short transaction (naming the job that claimed it), sends with no
-- transaction open, and records the outcome in another. Another job for the same row waits
-- for the lease to end; the same job run again (its worker died mid-send) takes it over.
ALTER TABLE email_outbox ADD COLUMN send_lease_until timestamptz, ADD COLUMN send_claimed_by text;
