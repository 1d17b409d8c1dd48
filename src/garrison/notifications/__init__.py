"""Messages to patients outside Garrison (email, SMS): an outbox written in the same transaction as
the change that causes them, delivered later through a pluggable sender."""
