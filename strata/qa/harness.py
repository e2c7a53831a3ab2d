"""The QA loop: for base, each layer and blend, set /lora-adapters, run every prompt, score, and write the report."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from strata.errors import StrataError
from strata.qa import metrics as m
from strata.qa.client import QAClient, ServerError
from strata.qa.plan import (BASE, Gate, Layer, adapter_roots, build_plan, discover_layers, discover_soft_prompts,
                            parse_gate)
from strata.qa.prompts import PromptItem, PromptSet, load_prompt_set, val_texts
from strata.qa.prompts import from_val as val_prompts
from strata.settings import Settings

DEFAULT_MAX_TOKENS = 64
DEFAULT_SEED = 0
PPL_TEXTS = 8  # held-out texts scored for perplexity
PPL_CHARS = 1500  # each truncated so it fits a small context
GATEABLE = (*m.QUALITY, "tokens_per_s")


def run_qa(settings: Settings, *, server: str | None = None, model: str | os.PathLike | None = None,
           layers: Sequence[str | os.PathLike] | None = None, blends: Sequence[str] = (),
           prompts: str | os.PathLike | None = None, from_val: int | None = None,
           max_tokens: int = DEFAULT_MAX_TOKENS, seed: int = DEFAULT_SEED, fail_under: Sequence[str] = (),
           api_key: str | None = None, dry_run: bool = False, progress: bool = True,
           echo: Callable[[str], None] = print, release: dict[str, Any] | None = None,
           soft_prompts: Sequence[str | os.PathLike] | None = ()) -> dict[str, Any]:
    """Compare base + layers + blends on a prompt set; returns the results dict (with "report_dir").
    `layers` None means every adapter dir under settings.peft holding adapter.gguf (merged/ excluded);
    `release` (name, version, ...) is recorded in the target when the model is a pulled release; `soft_prompts`
    adds one layer per soft prompt on the base (None: every one under WORKSPACE/soft_prompts/)."""
    if server and model:
        raise StrataError("pass either --server URL or --model M.gguf, not both")
    if max_tokens < 1:
        raise StrataError(f"--max-tokens must be at least 1, got {max_tokens}")
    held_out = settings.pairs_val_jsonl if settings.pairs_val_jsonl.is_file() else settings.val_jsonl  # pairs first
    prompt_set = val_prompts(held_out, from_val) if from_val else load_prompt_set(prompts)
    layer_paths = list(layers) if layers is not None else discover_layers(settings.peft)
    softs = list(soft_prompts) if soft_prompts is not None else discover_soft_prompts(settings.workspace / "soft_prompts")
    plan = build_plan(layer_paths, blends, settings.peft, softs)
    gates = [parse_gate(spec, GATEABLE) for spec in fail_under]
    unknown = sorted({g.layer for g in gates if g.layer} - {layer.name for layer in plan})
    if unknown:
        raise StrataError(f"--fail-under names unknown layer(s) {unknown}; layers are {[l.name for l in plan]}")
    texts, ppl_source = _perplexity_texts(settings, prompt_set)
    results: dict[str, Any] = {
        "target": {"server": server, "model": None if server else str(model or settings.model_path),
                   **({"release": release} if release else {})},
        "prompt_set": {"name": prompt_set.name, "source": prompt_set.source, "count": len(prompt_set.items)},
        "generation": {"max_tokens": max_tokens, "seed": seed, "temperature": 0.0},
        "perplexity_source": ppl_source, "perplexity_texts": len(texts),
        "layers": [layer.as_dict() for layer in plan],
        "requests_estimate": len(plan) * (2 + len(prompt_set.items) + len(texts)),
    }
    _echo_plan(results, plan, echo)
    if dry_run:
        return {**results, "dry_run": True, "report_dir": None}
    with serve_target(settings, server, model, plan, api_key) as base_url, QAClient(base_url, api_key) as client:
        results["target"]["base_url"] = base_url
        results["started"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        rows, layer_info = _run_layers(client, plan, prompt_set, texts, max_tokens, seed, progress)
        results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    results["prompts"] = [_prompt_dict(item) for item in prompt_set.items]
    results["layers"] = [{**layer.as_dict(), **layer_info[layer.name],
                          "summary": _summary(rows, layer.name, layer_info[layer.name])} for layer in plan]
    results["rows"] = rows
    results["topics"] = {metric: _topic_table(rows, prompt_set.items, metric) for metric in ("f1", "rouge_l")}
    results["gates"] = [_check_gate(gate, results["layers"]) for gate in gates]
    from strata.qa.report import write_report  # matplotlib is imported only when a report is written

    results["report_dir"] = str(write_report(results, settings.runs))
    _echo_summary(results, echo)
    return results


def failed_gates(results: dict[str, Any]) -> list[str]:
    """Messages of every --fail-under gate that failed (empty when all passed)."""
    return [gate["message"] for gate in results.get("gates", []) if not gate["passed"]]


@contextlib.contextmanager
def serve_target(settings: Settings, server: str | None, model: str | os.PathLike | None, plan: list[Layer],
            api_key: str | None) -> Iterator[str]:
    """The base URL to talk to: --server as given, or an in-process server on --model stopped afterwards."""
    if server:
        yield server
        return
    from strata.serve.config import ServeConfig
    from strata.serve.server import serve_in_thread

    path = Path(model or settings.model_path)
    if not path.is_file():
        raise StrataError(f"model {path} not found; pass --model M.gguf (or set MODEL_PATH), or --server URL "
                          "to test a running `strata serve`")
    config = ServeConfig(model=path, n_ctx=settings.n_ctx, n_threads=settings.n_threads, api_key=api_key,
                         adapter_roots=adapter_roots(plan), logits_all=True, workspace=settings.workspace)
    with serve_in_thread(config) as base_url:
        yield base_url


def _run_layers(client: QAClient, plan: list[Layer], prompt_set: PromptSet, texts: list[str], max_tokens: int,
                seed: int, progress: bool) -> tuple[list[dict], dict[str, dict]]:
    """Every layer x prompt, then perplexity per layer; a layer that fails to load is recorded and skipped."""
    from tqdm import tqdm

    rows: list[dict] = []
    info: dict[str, dict] = {}
    before = _active(client.adapters())
    per_layer = len(prompt_set.items) + len(texts)
    with tqdm(total=len(plan) * per_layer, desc="qa", unit="req", file=sys.stderr, disable=not progress) as bar:
        for layer in plan:
            bar.set_description(f"qa {layer.name}")
            try:
                client.set_adapters(list(layer.adapters))
                state = client.adapters()
            except ServerError as exc:
                info[layer.name] = {"status": "failed", "error": str(exc), "server_state": None}
                bar.update(per_layer)
                continue
            info[layer.name] = {"status": "ok", "error": None, "server_state": state}
            for item in prompt_set.items:
                rows.append(_generate(client, layer, item, max_tokens, seed))
                bar.update(1)
            info[layer.name].update(_perplexity(client, texts, layer.soft_prompt))
            bar.update(len(texts))
    with contextlib.suppress(ServerError):
        client.set_adapters(before)  # leave a shared server as we found it
    return rows, info


def _generate(client: QAClient, layer: Layer, item: PromptItem, max_tokens: int, seed: int) -> dict:
    row: dict[str, Any] = {"layer": layer.name, "prompt_id": item.id}
    try:
        gen = client.chat(item.text, max_tokens=max_tokens, seed=seed, soft_prompt=layer.soft_prompt)
    except ServerError as exc:
        return {**row, "output": None, "error": str(exc), "metrics": None}
    scores = m.reference_metrics(gen.text, item.reference) if item.reference else None
    return {**row, "output": gen.text, "error": None, "metrics": scores, "ttft_s": gen.ttft_s,
            "latency_s": gen.latency_s, "completion_tokens": gen.completion_tokens, "tokens_per_s": gen.tokens_per_s}


def _perplexity(client: QAClient, texts: list[str], soft_prompt: str | None = None) -> dict:
    if not texts:
        return {"perplexity": None, "perplexity_error": "no held-out text or references to score"}
    try:
        return {"perplexity": m.perplexity(client.prompt_logprobs(text, soft_prompt=soft_prompt) for text in texts), "perplexity_error": None}
    except (ServerError, ValueError) as exc:
        return {"perplexity": None, "perplexity_error": str(exc)}


def _active(listing: list[dict]) -> list[tuple[str, float]]:
    """The active (path, scale) set of a GET /lora-adapters listing."""
    return [(a["path"], float(a.get("scale", 0))) for a in listing
            if a.get("path") and a.get("active", float(a.get("scale", 0)) != 0)]


def _perplexity_texts(settings: Settings, prompt_set: PromptSet) -> tuple[list[str], str]:
    held_out = settings.pairs_val_jsonl if settings.pairs_val_jsonl.is_file() else settings.val_jsonl
    texts, source = val_texts(held_out), str(held_out)
    if not texts:
        texts, source = prompt_set.references, f"references of {prompt_set.source}"
    return [text[:PPL_CHARS] for text in texts[:PPL_TEXTS]], source


def _prompt_dict(item: PromptItem) -> dict:
    return {"id": item.id, "prompt": item.text, "reference": item.reference, "topic": item.topic, "tags": item.tags}


def _summary(rows: list[dict], layer: str, info: dict) -> dict[str, Any]:
    mine = [r for r in rows if r["layer"] == layer]
    done = [r for r in mine if r["error"] is None]
    summary: dict[str, Any] = {key: m.mean((r["metrics"] or {}).get(key) for r in done) for key in m.QUALITY}
    summary.update({key: m.mean(r.get(key) for r in done) for key in ("ttft_s", "latency_s", "tokens_per_s")})
    summary.update(perplexity=info.get("perplexity"), prompts=len(mine), errors=len(mine) - len(done))
    return summary


def _topic_table(rows: list[dict], items: list[PromptItem], metric: str) -> dict[str, dict[str, float | None]]:
    """layer -> topic -> mean metric over the topic's prompts with a reference."""
    topic = {item.id: item.topic for item in items if item.topic and item.reference}
    table: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        if row["metrics"] and row["prompt_id"] in topic:
            table.setdefault(row["layer"], {}).setdefault(topic[row["prompt_id"]], []).append(row["metrics"][metric])
    return {layer: {t: m.mean(v) for t, v in sorted(by.items())} for layer, by in table.items()}


def _check_gate(gate: Gate, layers: list[dict]) -> dict[str, Any]:
    """A gate on a named layer, or on the best loaded non-base layer (the base when nothing else was planned)."""
    spec = f"{gate.metric}{'@' + gate.layer if gate.layer else ''}>={gate.value:g}"
    if gate.layer:
        candidates = [l for l in layers if l["name"] == gate.layer]
    else:
        others = [l for l in layers if l["name"] != BASE]
        candidates = [l for l in others if l["status"] == "ok"] if others else layers
    scored = [(l["summary"][gate.metric], l["name"]) for l in candidates
              if l["status"] == "ok" and l["summary"][gate.metric] is not None]
    if not scored:
        who = gate.layer or "any non-base layer"
        return {"spec": spec, "passed": False, "layer": gate.layer, "value": None,
                "message": f"--fail-under {spec}: no {gate.metric} for {who} (failed to load or no references)"}
    value, name = max(scored)
    passed = value >= gate.value
    verdict = "passes" if passed else "fails"
    return {"spec": spec, "passed": passed, "layer": name, "value": value,
            "message": f"--fail-under {spec}: {gate.metric} of layer {name} is {value:.4g}, {verdict} {gate.value:g}"}


def _echo_plan(results: dict, plan: list[Layer], echo: Callable[[str], None]) -> None:
    echo(f"QA plan: {len(plan)} configuration(s) x {results['prompt_set']['count']} prompt(s) "
         f"from {results['prompt_set']['source']}; perplexity on {results['perplexity_texts']} text(s)")
    for layer in plan:
        parts = ", ".join(f"{Path(p).name}:{s:g}" for p, s in layer.adapters) or "no adapters"
        echo(f"  {layer.kind:5} {layer.name}: {parts}")
    echo(f"  about {results['requests_estimate']} requests, max_tokens={results['generation']['max_tokens']}")


def _echo_summary(results: dict, echo: Callable[[str], None]) -> None:
    for layer in results["layers"]:
        if layer["status"] != "ok":
            echo(f"  {layer['name']}: FAILED to load: {layer['error']}")
            continue
        s = layer["summary"]
        shown = "  ".join(f"{k}={s[k]:.3g}" for k in ("f1", "rouge_l", "bleu", "perplexity", "latency_s")
                          if s[k] is not None)
        echo(f"  {layer['name']}: {shown}" + (f"  ({s['errors']} prompt errors)" if s["errors"] else ""))
    for gate in results["gates"]:
        echo(gate["message"])
    echo(f"QA report: {Path(results['report_dir']) / 'report.html'}")
