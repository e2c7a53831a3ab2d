"""Write a QA run to runs/qa-<timestamp>/: results.json, report.md, report.html and plots/*.png (atomically)."""

from __future__ import annotations

import difflib
import html
import json
import os
import re
import shutil
import textwrap
import time
from pathlib import Path
from typing import Any

from strata.qa import metrics as m
from strata.qa.plan import BASE
from strata.qa.plots import write_plots

Cell = tuple[str, bool]  # text, best in its column
COLUMNS = (("exact_match", "EM"), ("f1", "F1"), ("rouge_l", "ROUGE-L"), ("bleu", "BLEU"),
           ("perplexity", "perplexity"), ("ttft_s", "TTFT s"), ("latency_s", "latency s"),
           ("tokens_per_s", "tokens/s"))
PROMPT_SHOWN = 400  # characters of a (very long) prompt shown in the report
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def write_report(results: dict[str, Any], runs_dir: Path) -> Path:
    """Build the whole report in a temp folder, then rename it into place; returns the final folder."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    final = _fresh(runs_dir / f"qa-{time.strftime('%Y%m%d-%H%M%S')}")
    tmp = runs_dir / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        results = {**results, "report_dir": str(final)}
        plots = [p.relative_to(tmp).as_posix() for p in write_plots(results, tmp / "plots")]
        (tmp / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
        (tmp / "report.md").write_text(render_markdown(results), encoding="utf-8")
        (tmp / "report.html").write_text(render_html(results, plots), encoding="utf-8")
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _fresh(path: Path) -> Path:
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def summary_table(results: dict[str, Any]) -> tuple[list[str], list[list[Cell]]]:
    """Layer x metric means; the best loaded layer per column is flagged."""
    layers = results["layers"]
    ok = [layer if layer["status"] == "ok" else None for layer in layers]
    best = {key: m.best_index([l["summary"][key] if l else None for l in ok], key) for key, _ in COLUMNS}
    rows = []
    for i, layer in enumerate(layers):
        head: list[Cell] = [(layer["name"], False), (layer["kind"], False)]
        if layer["status"] != "ok":
            rows.append(head + [(f"FAILED: {layer['error']}", False)] + [("", False)] * (len(COLUMNS) - 1) + [("", False)])
            continue
        s = layer["summary"]
        rows.append(head + [(_fmt(s[key]), best[key] == i) for key, _ in COLUMNS] + [(str(s["errors"]), False)])
    return ["layer", "kind", *(label for _, label in COLUMNS), "errors"], rows


def topic_table(results: dict[str, Any], metric: str = "f1") -> tuple[list[str], list[list[Cell]]]:
    """Layer x topic mean of `metric`; the best layer per topic is flagged."""
    table = results.get("topics", {}).get(metric) or {}
    topics = sorted({t for by in table.values() for t in by})
    layers = list(table)
    best = {t: m.best_index([table[l].get(t) for l in layers], metric) for t in topics}
    rows = [[(layer, False)] + [(_fmt(table[layer].get(t)), best[t] == i) for t in topics]
            for i, layer in enumerate(layers)]
    return ["layer", *topics], rows


def printable(text: str) -> str:
    """Control characters (tiny models emit raw byte tokens) shown as \\xNN escapes; newlines and tabs kept."""
    return _CONTROL.sub(lambda found: f"\\x{ord(found.group()):02x}", text)


def _wrapped(text: str) -> list[str]:
    return [line for para in text.splitlines() or [""] for line in (textwrap.wrap(para, 72) or [""])]


def output_diff(base: str, other: str, name: str) -> list[str]:
    """Unified diff of a layer's output against the base's, wrapped at 72 columns."""
    return list(difflib.unified_diff(_wrapped(base), _wrapped(other), BASE, name, lineterm="", n=1))


def _prompt_sections(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per prompt: its text, reference and each layer's output, metrics and diff against the base."""
    by_key = {(r["layer"], r["prompt_id"]): r for r in results["rows"]}
    sections = []
    for prompt in results["prompts"]:
        base_row = by_key.get((BASE, prompt["id"]))
        outputs = []
        for layer in results["layers"]:
            row = by_key.get((layer["name"], prompt["id"]))
            if row is None:
                continue
            text = printable(row["output"]) if row["error"] is None else f"ERROR: {row['error']}"
            same = base_row is not None and layer["name"] != BASE and row["output"] == base_row["output"]
            diff = [] if layer["name"] == BASE or base_row is None or same else \
                output_diff(printable(base_row["output"] or ""), printable(row["output"] or ""), layer["name"])
            outputs.append({"layer": layer["name"], "text": text, "metrics": row["metrics"], "diff": diff,
                            "same_as_base": same})
        shown = prompt["prompt"] if len(prompt["prompt"]) <= PROMPT_SHOWN else \
            prompt["prompt"][:PROMPT_SHOWN] + f" ... ({len(prompt['prompt'])} characters)"
        sections.append({**prompt, "shown": shown or "(empty prompt)", "outputs": outputs})
    return sections


def _meta_lines(results: dict[str, Any]) -> list[str]:
    target = results["target"]
    gen = results["generation"]
    return [f"target: {target.get('server') or target.get('model')} ({target.get('base_url', '')})",
            f"prompt set: {results['prompt_set']['name']} ({results['prompt_set']['count']} prompts, "
            f"{results['prompt_set']['source']})",
            f"generation: greedy, temperature {gen['temperature']}, seed {gen['seed']}, max_tokens {gen['max_tokens']}",
            f"perplexity: {results['perplexity_texts']} text(s) from {results['perplexity_source']}",
            f"run: {results.get('started', '')} to {results.get('finished', '')}"]


def _md_table(headers: list[str], rows: list[list[Cell]]) -> list[str]:
    def cell(text: str, best: bool) -> str:
        text = text.replace("|", "\\|").replace("\n", " ")
        return f"**{text}**" if best and text else text
    return (["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
            + ["| " + " | ".join(cell(*c) for c in row) + " |" for row in rows])


def render_markdown(results: dict[str, Any]) -> str:
    lines = ["# strata QA report", ""] + [f"- {line}" for line in _meta_lines(results)] + ["", "## Summary", "",
             "Means over prompts; quality metrics only over prompts with a reference. Best per column in bold "
             "(lowest for perplexity and latency). BLEU is sacrebleu's 0-100 scale.", ""]
    lines += _md_table(*summary_table(results))
    if results["gates"]:
        lines += ["", "## Gates", ""] + [f"- {'PASS' if g['passed'] else 'FAIL'}: {g['message']}" for g in results["gates"]]
    headers, rows = topic_table(results)
    if rows:
        lines += ["", "## Token F1 by topic", "", "Which layer wins for which topic (best in bold).", ""]
        lines += _md_table(headers, rows)
    lines += ["", "## Prompts"]
    for sec in _prompt_sections(results):
        tags = ", ".join(filter(None, [sec["topic"], *sec["tags"]]))
        lines += ["", f"### {sec['id']}" + (f" ({tags})" if tags else ""), "", "> " + sec["shown"].replace("\n", " ")]
        if sec["reference"]:
            lines += ["", f"Reference: {sec['reference']}"]
        lines += ["", "| layer | output | F1 | ROUGE-L |", "|---|---|---|---|"]
        for out in sec["outputs"]:
            scores = out["metrics"] or {}
            text = out["text"].replace("|", "\\|").replace("\n", " ") or "(empty)"
            lines.append(f"| {out['layer']} | {text} | {_fmt(scores.get('f1'))} | {_fmt(scores.get('rouge_l'))} |")
        for out in sec["outputs"]:
            if out["diff"]:
                lines += ["", f"Diff of {out['layer']} against base:", "", "```diff", *out["diff"], "```"]
            elif out["same_as_base"]:
                lines += ["", f"{out['layer']}: same output as base."]
    return "\n".join(lines) + "\n"


def _html_table(headers: list[str], rows: list[list[Cell]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td class=\"{'best' if best else ''}\">{html.escape(text)}</td>"
                                    for text, best in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _html_diff(lines: list[str]) -> str:
    kinds = {"+": "add", "-": "del", "@": "hunk"}
    return "<pre class=\"diff\">" + "\n".join(
        f"<span class=\"{kinds.get(line[:1], '')}\">{html.escape(line)}</span>" for line in lines) + "</pre>"


STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}table{border-collapse:collapse;"
         "margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}"
         "td.best{font-weight:bold;background:#e6f4ea}.diff .add{color:#1a7f37}.diff .del{color:#cf222e}"
         ".diff .hunk{color:#8250df}pre{background:#f6f8fa;padding:8px;white-space:pre-wrap}img{max-width:100%}"
         ".fail{color:#cf222e}.pass{color:#1a7f37}")


def render_html(results: dict[str, Any], plots: list[str]) -> str:
    parts = ["<!doctype html><html><head><meta charset=\"utf-8\"><title>strata QA report</title>",
             f"<style>{STYLE}</style></head><body><h1>strata QA report</h1><ul>"]
    parts += [f"<li>{html.escape(line)}</li>" for line in _meta_lines(results)] + ["</ul><h2>Summary</h2>"]
    parts.append("<p>Means over prompts; quality metrics only over prompts with a reference. Best per column "
                 "highlighted (lowest for perplexity and latency). BLEU is sacrebleu's 0-100 scale.</p>")
    parts.append(_html_table(*summary_table(results)))
    if results["gates"]:
        parts.append("<h2>Gates</h2><ul>" + "".join(
            f"<li class=\"{'pass' if g['passed'] else 'fail'}\">{html.escape(g['message'])}</li>"
            for g in results["gates"]) + "</ul>")
    headers, rows = topic_table(results)
    if rows:
        parts += ["<h2>Token F1 by topic</h2>", _html_table(headers, rows)]
    if plots:
        parts.append("<h2>Plots</h2>" + "".join(f"<p><img src=\"{html.escape(p)}\" alt=\"{html.escape(p)}\"></p>"
                                                for p in plots))
    parts.append("<h2>Prompts</h2>")
    for sec in _prompt_sections(results):
        tags = ", ".join(filter(None, [sec["topic"], *sec["tags"]]))
        parts.append(f"<h3>{html.escape(sec['id'])} <small>{html.escape(tags)}</small></h3>"
                     f"<pre>{html.escape(sec['shown'])}</pre>")
        if sec["reference"]:
            parts.append(f"<p><b>Reference:</b> {html.escape(sec['reference'])}</p>")
        rows = [[(o["layer"], False), (o["text"] or "(empty)", False),
                 (_fmt((o["metrics"] or {}).get("f1")), False), (_fmt((o["metrics"] or {}).get("rouge_l")), False)]
                for o in sec["outputs"]]
        parts.append(_html_table(["layer", "output", "F1", "ROUGE-L"], rows))
        for out in sec["outputs"]:
            if out["diff"]:
                parts.append(f"<p>Diff of {html.escape(out['layer'])} against base:</p>{_html_diff(out['diff'])}")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
