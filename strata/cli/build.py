"""`strata build`: the seed-003 pipeline steps as sub-commands, with the seed's snake_case names as aliases."""

from __future__ import annotations

import click

from strata.cli import build_data, build_model
from strata.cli.common import AliasGroup

SEED_ALIASES = {
    "pdf_pretest": "pdf-pretest",
    "build_dataset": "dataset",
    "data_prep": "synthesize",
    "archive_pdfs": "archive",
    "train_level1": "train --level 1",
    "train_level2": "train --level 2",
    "train_level3": "train --level 3",
    "merge_level": "merge",
    "convert_to_gguf": "convert",
    "train_all": "all",
}


@click.group(cls=AliasGroup, aliases=SEED_ALIASES)
def build() -> None:
    """Build stage: PDFs -> dataset -> layered LoRA adapters -> merged model -> quantized GGUF.

    Every step reads and writes under the workspace (see --workspace on each step).
    """


for command in (*build_data.COMMANDS, *build_model.COMMANDS):
    build.add_command(command)
