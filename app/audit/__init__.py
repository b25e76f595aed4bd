"""The log table: every state change appends one entry in its transaction (docs/log-format.md)."""
