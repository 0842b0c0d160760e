"""What leaves the service: one outbox engine (`outbox`) with a channel per kind of message
(customer `webhooks`, `staff` notifications), and the SSRF guard for their targets."""
