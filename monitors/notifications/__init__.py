"""Graph change notifications: the webhook, the inbox, delta processing, subscriptions."""
