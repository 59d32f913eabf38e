"""The event outbox and webhook subscriptions: events written in the transaction of the
change they report, and the deliveries they owe. ``live/`` follows and sends them."""
