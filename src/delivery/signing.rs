//! Standard Webhooks signatures (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
