"""`strata ask`: a grounded answer with citations, from a running server or one started in-process."""

from __future__ import annotations

import json
from pathlib import Path

import click

from strata.cli.common import friendly_errors, workspace_option
from strata.settings import Settings


@click.command()
@click.argument("question")
@click.option("--server", metavar="URL", help="A running `strata serve` (default: start one in-process on MODEL_PATH "
              "with the workspace's index and bindings, and stop it after).")
@click.option("--model", type=click.Path(dir_okay=False), help="Base GGUF for the in-process server (default "
              "MODEL_PATH).")
@click.option("--index", metavar="PATH|postgresql://...", help="Evidence index for the in-process server (default "
              "WORKSPACE/index.sqlite).")
@click.option("--embedding-model", type=click.Path(dir_okay=False), help="GGUF embedder for the dense rerank "
              "(in-process server; the index must hold its vectors).")
@click.option("--topic", help="Search this topic only; runs under its binding.")
@click.option("--document", help="Search this PDF only (path under data/raw_pdfs); runs under its binding.")
@click.option("--lora", "loras", multiple=True, metavar="PATH", help="Adapter dir or .gguf to answer with (repeat; "
              "beats bindings).")
@click.option("--top-k", type=int, help="Chunks of evidence (server default GEN_EVIDENCE_TOP_K).")
@click.option("--min-score", type=float, help="BM25 score a chunk needs (server default GEN_MIN_RANK_SCORE).")
@click.option("--max-tokens", type=int, default=128, show_default=True, help="Tokens of answer.")
@click.option("--api-key", envvar="API_KEY", help="Bearer key for the server (env API_KEY).")
@click.option("--json", "as_json", is_flag=True, help="Print the whole reply as JSON.")
@workspace_option
@friendly_errors
def ask(settings: Settings, question: str, server: str | None, model: str | None, index: str | None,
        embedding_model: str | None, topic: str | None, document: str | None, loras: tuple[str, ...],
        top_k: int | None, min_score: float | None, max_tokens: int, api_key: str | None, as_json: bool) -> None:
    """Answer QUESTION from the evidence index, citing the chunks it used as [n] with their PDF and pages."""
    from strata.qa.grounded import ask_once

    body = {"prompt": question, "topic": topic, "document": document, "top_k": top_k, "min_score": min_score,
            "max_tokens": max_tokens, "lora": [{"path": str(Path(p).resolve()), "scale": 1.0} for p in loras] or None}
    reply = ask_once(settings, {k: v for k, v in body.items() if v is not None}, server=server, model=model,
                     index=index, embedding_model=embedding_model, api_key=api_key)
    if as_json:
        click.echo(json.dumps(reply, indent=2, ensure_ascii=False))
        return
    click.echo(format_reply(reply))


def format_reply(reply: dict) -> str:
    """The answer, then one line per citation: [n] source, pages, heading (score)."""
    lines = [reply["answer"].strip(), ""]
    for c in reply["citations"]:
        pages = ", ".join(map(str, c["pages"]))
        lines.append(f"[{c['n']}] {c['source']} p. {pages} - {c['heading']} (score {c['score']:.2f})")
    lines.append(f"adapters: {reply.get('adapters')}; retrieval: {reply['retrieval']['mode']}")
    return "\n".join(lines)
