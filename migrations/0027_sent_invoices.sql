-- Invoices sent rather than charged (`collection_method = send_invoice`, due `days_until_due`
-- after they are sent): dunning chases them by email on the policy's days and never pays them
-- through the API; `invoice.overdue` opens the case (issue 37).
ALTER TABLE invoices ADD COLUMN collection_method text NOT NULL DEFAULT 'charge_automatically';
ALTER TABLE invoices ADD COLUMN due_date timestamptz;
