-- Pauses as the mirror keeps them (issue 37): why Stripe paused a subscription
-- (`status_details.paused.subscription.type`: first_payment_failure, final_payment_failure, …)
-- and a paused collection (`pause_collection.behavior`: keep_as_draft, mark_uncollectible,
-- void), which leaves the status and the access as they are.
ALTER TABLE subscriptions ADD COLUMN paused_reason text;
ALTER TABLE subscriptions ADD COLUMN pause_collection text;
