"""`strata build` model steps: train, merge, convert, all."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
