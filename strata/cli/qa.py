"""`strata qa`: run prompts through every adapter layer and blend, compare quality and latency."""

from __future__ import annotations

import click

from strata.cli.common import workspace_option
from strata.settings import Settings


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@workspace_option
def qa(settings: Settings) -> None:
    """Compare adapter layers and blends on a prompt set (not built yet)."""
    raise click.ClickException("strata qa is not built yet")
