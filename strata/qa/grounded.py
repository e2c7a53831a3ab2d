"""`strata qa --grounded` and `strata ask`: each layer answers held-out questions with and without evidence
(/gen/ask against plain chat), scored by answer F1, citation accuracy (is the question's source chunk cited, at
which rank) and retrieval recall@k. Talks to a server over HTTP; starts one in-process when none is given."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from strata.errors import StrataError
from strata.files import atomic_write_json, atomic_write_text, read_jsonl
from strata.qa.client import QAClient
from strata.qa.metrics import token_f1
from strata.settings import Settings

RECALL_KS = (1, 3, 5)
PAIRS_VAL = "pairs_val.jsonl"  # question/answer pairs with their chunk_id (the synthesis step), preferred


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    reference: str
    chunk_id: str
    topic: str | None


def held_out(settings: Settings, count: int) -> list[Question]:
    """Up to `count` held-out questions with their source chunk: synthesized pairs when the build made them, else
    val.jsonl chunks (question = the chunk's user prompt, reference = its text)."""
    pairs = settings.processed / PAIRS_VAL
    rows = read_jsonl(pairs, "") if pairs.is_file() else []
    found = [Question(f"pair-{i}", r["question"], r.get("answer") or "", str(r["chunk_id"]), r.get("topic"))
             for i, r in enumerate(rows, 1) if r.get("question") and r.get("chunk_id")]
    if not found:
        for i, r in enumerate(read_jsonl(settings.val_jsonl, "run `strata build dataset` first"), 1):
            user = next((m["content"] for m in r.get("messages") or [] if m.get("role") == "user"), None)
            prompt = user or f"Explain {r.get('heading')}."
            found.append(Question(f"val-{i}", prompt, r.get("text") or "", str(r["id"]), r.get("topic")))
    if not found:
        raise StrataError(f"no held-out questions: {settings.val_jsonl} is empty; rebuild the dataset.")
    return found[:count]


@contextmanager
def server_for(settings: Settings, server: str | None, model: str | None, index: str | None,
               embedding_model: str | None, adapter_roots: Sequence[str] = ()) -> Iterator[str]:
    """`server` itself, or an in-process server on `model` (default MODEL_PATH) with the given index."""
    if server:
        if model or index or embedding_model:
            raise StrataError("--model, --index and --embedding-model start an in-process server: pass them "
                              "without --server (the running server has its own).")
        yield server
        return
    from strata.serve.config import ServeConfig
    from strata.serve.server import serve_in_thread

    path = Path(model or settings.model_path)
    config = ServeConfig(model=path, n_ctx=settings.n_ctx, n_threads=settings.n_threads, workspace=settings.workspace,
                         index=index, embedding_model=Path(embedding_model) if embedding_model else None,
                         adapter_roots=list(adapter_roots))
    with serve_in_thread(config) as url:
        yield url


def ask_once(settings: Settings, body: dict[str, Any], *, server: str | None = None, model: str | None = None,
             index: str | None = None, embedding_model: str | None = None, api_key: str | None = None) -> dict:
    """One /gen/ask reply (unstreamed)."""
    roots = sorted({str(Path(e["path"]).parent) for e in body.get("lora") or []})
    with server_for(settings, server, model, index, embedding_model, roots) as url, QAClient(url, api_key) as client:
        return client.ask(body)


def _chat(client: QAClient, question: str, lora: list[dict], max_tokens: int) -> str:
    reply = client._request("POST", "/v1/chat/completions", json={
        "messages": [{"role": "user", "content": question}], "max_tokens": max_tokens, "temperature": 0, "seed": 0,
        "lora": lora})
    return reply["choices"][0]["message"]["content"]


def _rank(citations: list[dict], chunk_id: str) -> int | None:
    return next((c["n"] for c in citations if c["chunk_id"] == chunk_id), None)


def score_layer(client: QAClient, name: str, lora: list[dict], questions: list[Question], top_k: int,
                max_tokens: int, tick: Callable[[], None]) -> dict[str, Any]:
    """One layer: every question without evidence (plain chat) and with it (/gen/ask, the same adapters)."""
    rows = []
    for q in questions:
        plain = _chat(client, q.question, lora, max_tokens)
        tick()
        reply = client.ask({"prompt": q.question, "lora": lora, "top_k": top_k, "max_tokens": max_tokens,
                            "min_score": -1e9})
        tick()
        rank = _rank(reply["citations"], q.chunk_id)
        rows.append({"id": q.id, "topic": q.topic, "f1_ungrounded": token_f1(plain, q.reference),
                     "f1_grounded": token_f1(reply["answer"], q.reference), "source_rank": rank,
                     "source_cited": rank is not None and rank in reply.get("cited", []),
                     "ungrounded": plain, "grounded": reply["answer"]})
    n = len(rows)
    ranks = [r["source_rank"] for r in rows]
    found = [r for r in ranks if r is not None]
    return {"name": name, "questions": n, "rows": rows,
            "f1_ungrounded": sum(r["f1_ungrounded"] for r in rows) / n,
            "f1_grounded": sum(r["f1_grounded"] for r in rows) / n,
            "citation_accuracy": len(found) / n, "cited_source": sum(r["source_cited"] for r in rows) / n,
            "mean_source_rank": sum(found) / len(found) if found else None,
            "recall_at": {str(k): sum(1 for r in found if r <= k) / n for k in RECALL_KS if k <= top_k}}


def run_grounded(settings: Settings, *, server: str | None = None, model: str | None = None,
                 layers: Sequence[str] = (), count: int = 20, top_k: int = 5, max_tokens: int = 64,
                 index: str | None = None, embedding_model: str | None = None, api_key: str | None = None,
                 progress: bool = True, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Base and every layer, grounded vs ungrounded; writes runs/qa-grounded-<ts>/grounded.json and report.md."""
    from tqdm import tqdm

    from strata.qa.plan import BASE, adapter_roots, build_plan, discover_layers

    questions = held_out(settings, count)
    paths = list(layers) or [str(d) for d in discover_layers(settings.peft)]
    plan = build_plan(paths, (), settings.peft)
    bar = tqdm(total=len(plan) * len(questions) * 2, desc="qa --grounded", unit="req", disable=None if progress
               else True)
    with server_for(settings, server, model, index, embedding_model, adapter_roots(plan)) as url, \
            QAClient(url, api_key) as client:
        results = [score_layer(client, layer.name, [{"path": p, "scale": s} for p, s in layer.adapters],
                               questions, top_k, max_tokens, lambda: bar.update(1)) for layer in plan]
    bar.close()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    folder = settings.runs / f"qa-grounded-{stamp}"
    summary = {"target": {"server": server, "model": model or (None if server else str(settings.model_path))},
               "questions": len(questions), "top_k": top_k, "base": BASE, "layers": results, "finished": stamp}
    atomic_write_json(folder / "grounded.json", summary)
    atomic_write_text(folder / "report.md", report(summary))
    echo(report(summary))
    echo(f"grounded QA: {folder / 'grounded.json'}")
    return summary | {"report_dir": str(folder)}


def report(summary: dict[str, Any]) -> str:
    """A markdown table: per layer, F1 without and with evidence, citation accuracy, rank and recall@k."""
    ks = [k for k in RECALL_KS if k <= summary["top_k"]]
    head = ["layer", "F1 ungrounded", "F1 grounded", "source among citations", "answer cites source",
            "mean rank", *[f"recall@{k}" for k in ks]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for layer in summary["layers"]:
        rank = layer["mean_source_rank"]
        cells = [layer["name"], f"{layer['f1_ungrounded']:.3f}", f"{layer['f1_grounded']:.3f}",
                 f"{layer['citation_accuracy']:.2f}", f"{layer['cited_source']:.2f}",
                 "-" if rank is None else f"{rank:.2f}", *[f"{layer['recall_at'][str(k)]:.2f}" for k in ks]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
