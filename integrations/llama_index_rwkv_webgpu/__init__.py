"""Integration package (reserved; filled in by the integrations work, see docs/architecture.md)."""
