"""The web console: adapters, playground, compare, arena, QA reports, status and training runs (Jinja + plain JS)."""
