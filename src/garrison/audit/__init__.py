"""The tamper-evident audit trail: what happened, to whom, by whom, and whether it was allowed."""
