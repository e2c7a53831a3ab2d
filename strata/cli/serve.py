"""`strata serve`: the OpenAI-compatible llama.cpp server with /lora-adapters."""

from __future__ import annotations

import click

from strata.cli.common import workspace_option
from strata.settings import Settings


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@workspace_option
def serve(settings: Settings) -> None:
    """Serve a GGUF with hot-swappable LoRA adapters (not built yet)."""
    raise click.ClickException("strata serve is not built yet")
