"""`strata build` data steps: pdf-pretest, dataset, archive."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
