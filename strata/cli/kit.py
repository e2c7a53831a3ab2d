"""`strata kit`: make the sample PDF corpus and the tiny local base model."""

from __future__ import annotations

from pathlib import Path

import click

from strata.cli.common import AliasGroup, friendly_errors, workspace_option
from strata.settings import Settings


@click.group(cls=AliasGroup)
def kit() -> None:
    """Make local stand-ins for real inputs: sample PDFs and a tiny Llama base model."""


@kit.command("sample-pdfs")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path), required=False)
@click.option("--with-bad", is_flag=True, help="Also write problem PDFs (scanned, encrypted, truncated, empty, not a PDF, duplicate).")
@workspace_option
@friendly_errors
def sample_pdfs(dest: Path | None, with_bad: bool, settings: Settings) -> None:
    """Write the sample corpus as real PDFs into DEST/<topic>/<topic>.pdf (default: the workspace's data/raw_pdfs)."""
    from strata.kit.pdfs import write_sample_pdfs

    for path in write_sample_pdfs(dest or settings.raw_pdfs, with_bad=with_bad):
        click.echo(path)


@kit.command("tiny-base")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path), required=False)
@click.option("--corpus", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Folder of PDFs or .md/.txt files to train the tokenizer (and pre-training) on. Default: the kit corpus.")
@click.option("--pretrain-steps", type=click.IntRange(min=0), default=0, show_default=True,
              help="Causal-LM steps on the corpus so generations are not noise (the demo uses 300).")
@click.option("--size", type=click.Choice(["test", "demo"]), default="demo", show_default=True,
              help="test: 2 layers, builds in seconds. demo: 4 layers.")
@click.option("--seed", type=int, default=0, show_default=True)
@workspace_option
@friendly_errors
def tiny_base(dest: Path | None, corpus: Path | None, pretrain_steps: int, size: str, seed: int,
              settings: Settings) -> None:
    """Build a tiny Llama-architecture HF model at DEST (default: BASE_MODEL), deterministic under --seed."""
    from strata.kit.texts import corpus_texts
    from strata.kit.tiny_base import SPECS, make_tiny_base

    path = make_tiny_base(dest or Path(settings.base_model), corpus_texts(corpus), SPECS[size], pretrain_steps, seed, progress=True)
    click.echo(f"tiny base written to {path}")
