"""QA harness: run one prompt set through the base, every adapter layer and blend over HTTP, and report."""
