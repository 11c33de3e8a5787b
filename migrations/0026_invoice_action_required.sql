-- A payment only the customer can complete (3-D Secure: invoice.payment_action_required, or a
-- pay call answered with a requires-action code): from then on Ballast makes no off-session
-- retry of the invoice and reminds the customer of the hosted invoice page (issue 37).
ALTER TABLE invoices ADD COLUMN action_required_at timestamptz;
ALTER TABLE invoices ADD COLUMN hosted_invoice_url text;
