"""`strata build` data steps: pdf-pretest, dataset, synthesize, archive."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from strata.cli.common import friendly_errors, run_locked, teacher_of, teacher_options, workspace_option
from strata.settings import Settings


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    Console().print(table)


@click.command("pdf-pretest")
@click.option("--preset", default="pretest", show_default=True,
              help="Thresholds: a name under presets/ or a path to a .yaml file.")
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON instead of a table.")
@workspace_option
@friendly_errors
@run_locked
def pdf_pretest(preset: str, as_json: bool, settings: Settings) -> None:
    """Score every PDF under data/raw_pdfs/<topic>/ and write data/processed/pdf_pretest.json."""
    from strata.data.pretest import run_pretest

    report = run_pretest(settings, preset)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    docs = report["documents"]
    _table("PDF pretest", ["file", "topic", "pages", "score", "verdict", "reason"],
           [[d["path"], d["topic"], d["pages"], f"{d['score']:.2f}", d["verdict"], "; ".join(d["reasons"]) or "-"]
            for d in docs])
    ok = sum(d["recommended"] for d in docs)
    click.echo(f"{ok} of {len(docs)} PDFs recommended; report: {settings.pretest_json}")


@click.command("dataset")
@click.option("--preset", default="dataset", show_default=True,
              help="Chunking/split preset: a name under presets/ or a path to a .yaml file.")
@click.option("--base-model", default=None,
              help="HF model dir (or hub id) whose tokenizer measures chunks. Default: BASE_MODEL (models/hf_base).")
@workspace_option
@friendly_errors
@run_locked
def dataset(preset: str, base_model: str | None, settings: Settings) -> None:
    """Chunk the pretest's recommended PDFs into data/processed/train.jsonl and val.jsonl."""
    from strata.data.dataset import build_dataset

    if base_model is not None:
        if Path(base_model).exists():  # a path given on the command line is relative to the current directory
            base_model = str(Path(base_model).resolve())
        settings = Settings.resolve(workspace=settings.workspace, base_model=base_model)
    summary = build_dataset(settings, preset)
    rows = [[topic, n["train"], n["val"], summary["tokens"][topic]["train"], summary["tokens"][topic]["val"]]
            for topic, n in summary["counts"].items()]
    _table("dataset", ["topic", "train chunks", "val chunks", "train tokens", "val tokens"], rows)
    dropped = summary["dropped_duplicates"]
    click.echo(f"dropped {dropped['exact']} exact and {dropped['near']} near-duplicate chunks; "
               f"wrote {settings.train_jsonl} and {settings.val_jsonl}")


@click.command("synthesize")
@teacher_options
@click.option("--preset", default="synthesis", show_default=True,
              help="Filters, split and teacher knobs: a name under presets/ or a path to a .yaml file.")
@click.option("--limit", type=int, default=None, help="Only the first N chunks (a quick look at what comes out).")
@workspace_option
@friendly_errors
@run_locked
def synthesize(generator: str | None, teacher_url: str | None, teacher_model: str | None, preset: str,
               limit: int | None, settings: Settings) -> None:
    """Question/answer pairs from every chunk -> data/processed/pairs_train.jsonl, pairs_val.jsonl.

    Each pair cites its chunk id, topic, section, source PDF and pages; synthesis_summary.json counts pairs per
    topic and type and rejections per reason. A killed llm run resumes from its cache.
    """
    from strata.data.synthesis import synthesize as run
    from strata.data.synthesis import teacher_from

    teacher = teacher_from(teacher_of(teacher_url, teacher_model))
    summary = run(settings, preset=preset, generator=generator, teacher=teacher, limit=limit, echo=click.echo)
    rows = [[topic, n["train"], n["val"]] for topic, n in summary["per_topic"].items()]
    _table(f"pairs ({summary['generator']})", ["topic", "train pairs", "held-out pairs"], rows)
    click.echo("types: " + ", ".join(f"{k} {v}" for k, v in sorted(summary["per_type"].items())))
    click.echo("rejected: " + (", ".join(f"{k} {v}" for k, v in sorted(summary["rejected"].items())) or "none"))
    click.echo(f"wrote {settings.pairs_train_jsonl} and {settings.pairs_val_jsonl}; summary {settings.synthesis_summary}")


@click.command("index")
@click.option("--index", metavar="PATH|postgresql://...", help="Where to build it: a SQLite file (default "
              "WORKSPACE/index.sqlite, env STRATA_INDEX) or a Postgres URL shared by serving replicas.",
              envvar="STRATA_INDEX")
@click.option("--embedding-model", type=click.Path(dir_okay=False), envvar="EMBEDDING_MODEL",
              help="GGUF sentence embedder (env EMBEDDING_MODEL): store a vector per chunk for the dense rerank. "
              "Default: the MiniLM GGUF `strata kit embedder` made, when it exists; `none`, or neither, builds a "
              "lexical (BM25) only index.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@workspace_option
@friendly_errors
@run_locked
def index(index: str | None, embedding_model: str | None, no_progress: bool, settings: Settings) -> None:
    """Build the evidence index for /gen/ask from every chunk of train.jsonl and val.jsonl (held-out chunks too),
    with topic, source PDF, pages and heading; the old index keeps serving until the new one is complete."""
    from strata.index.builder import build_index
    from strata.kit.embedder import embedder_setting

    build_index(settings, index, embedding_model=embedder_setting(embedding_model), progress=not no_progress,
                echo=click.echo)


@click.command("archive")
@click.option("--json", "as_json", is_flag=True, help="Print the archive record as JSON instead of a table.")
@workspace_option
@friendly_errors
@run_locked
def archive(as_json: bool, settings: Settings) -> None:
    """Move the PDFs the last dataset build used to PDF_ARCHIVE_PATH (copy, fsync, verify, then remove)."""
    from strata.data.archive import archive_pdfs

    record = archive_pdfs(settings)
    if as_json:
        click.echo(json.dumps(record, indent=2))
        return
    rows = [[m["path"], m["status"], m["dest"]] for m in record["moved"]]
    rows += [[s["path"], s["reason"], s.get("dest") or "-"] for s in record["skipped"]]
    _table("archive", ["file", "outcome", "archived as"], rows)
    click.echo(f"moved {len(record['moved'])} PDFs to {record['archive']}; record: {record['record']}")


COMMANDS: list[click.Command] = [pdf_pretest, dataset, synthesize, index, archive]
