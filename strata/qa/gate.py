"""The base-vs-layer gate: held-out pairs through the base and every topic layer on the served GGUF (per-request
adapters), a per-topic matrix (F1, ROUGE-L, answer perplexity), a forgetting check on general prompts, a verdict."""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Literal

from strata.errors import StrataError
from strata.files import atomic_write_json, atomic_write_text, read_json_or_none, read_jsonl
from strata.index.store import INDEX_FILE
from strata.qa import metrics as m
from strata.qa.client import QAClient, ServerError
from strata.qa.plan import ADAPTER_FILE, BASE, Layer
from strata.settings import Settings

GATE_FILE = "gate.json"  # peft/gate.json: the latest verdicts, which `release publish` carries
SUMMARY_FILE = "training_summary.json"
SAMPLES, SAMPLE_KEYS = 3, ("prompt", "reference", "output", "grounded")  # per matrix cell, kept in gate.json
SCORE_KEYS = ("f1", "rouge_l", "f1_grounded", "answer_perplexity")
PERPLEXITIES = ("perplexity", "answer_perplexity")  # lower is better: a gain is their relative drop


@dataclass(frozen=True)
class GatePreset:
    """presets/gate.yaml: what a topic layer must do to pass."""

    # what "beats the base on its own topic" compares: token F1 or ROUGE-L of the greedy answer, the perplexity of the
    # reference answer as text, or answer_perplexity: of the reference answer as the reply to its question
    metric: Literal["f1", "rouge_l", "perplexity", "answer_perplexity"] = "answer_perplexity"
    min_gain: float = 0.05  # X: own-topic gain over the base (F1 / ROUGE-L points; perplexities: relative drop)
    # the greedy answers must not get worse: own-topic F1 may fall at most this far below the base's (None: unchecked;
    # with metric f1 the gain already covers it)
    max_f1_loss: float | None = 0.02
    max_general_ppl_increase: float = 0.15  # Y: general-prompt perplexity may rise at most this share over the base
    # which perplexity of the general prompts' references the forgetting check compares: as replies to their prompts
    # (answer_perplexity) or as bare text (perplexity)
    general_metric: Literal["perplexity", "answer_perplexity"] = "answer_perplexity"
    max_pairs_per_topic: int = 40
    max_tokens: int = 64
    seed: int = 0
    concurrency: int = 4  # requests in flight (the engine's slots)
    general: str = "qa/general"  # the forgetting probes: a prompt set with references
    # also answer each held-out pair through /gen/ask with the same adapters when the workspace has an evidence
    # index: the matrix's grounded F1, beside the ungrounded one (informational: the verdict uses `metric`)
    grounded: bool = True
    # trained pairs per topic asked again as trained: the base on each topic's, every layer on its own topic's. A
    # layer that fails can then be told apart: it did not learn its data (train longer) or it learned it and does not
    # answer new questions (more varied pairs, a larger base). Informational; 0 skips it
    recall_pairs: int = 8


def topic_layers(settings: Settings) -> list[tuple[Path, str]]:
    """(adapter dir, topic) of every layer under peft/ whose training summary names a topic."""
    from strata.qa.plan import discover_layers

    found = []
    for folder in discover_layers(settings.peft):
        topic = (read_json_or_none(folder / SUMMARY_FILE) or {}).get("topic")
        if topic:
            found.append((folder, topic))
    return found


def _by_topic(rows: list[dict[str, Any]], per_topic: int) -> dict[str, list[dict[str, Any]]]:
    """The first `per_topic` answerable pairs of each topic, topics sorted."""
    by_topic: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row.get("type") != "unanswerable" and len(by_topic[row["topic"]]) < per_topic:
            by_topic[row["topic"]].append(row)
    return dict(sorted(by_topic.items()))


def _held_out(settings: Settings, per_topic: int) -> dict[str, list[dict[str, Any]]]:
    by_topic = _by_topic(read_jsonl(settings.pairs_val_jsonl, "run `strata build synthesize` first (the gate scores "
                                    "held-out pairs)"), per_topic)
    if not by_topic:
        raise StrataError(f"{settings.pairs_val_jsonl} holds no answerable held-out pairs; rebuild with "
                          "`strata build synthesize` (presets/synthesis.yaml val_fraction > 0)")
    return by_topic


def _trained(settings: Settings, per_topic: int) -> dict[str, list[dict[str, Any]]]:
    """Up to `per_topic` training pairs of each topic (none without pairs_train.jsonl or with per_topic 0)."""
    if per_topic <= 0 or not settings.pairs_train_jsonl.is_file():
        return {}
    return _by_topic(read_jsonl(settings.pairs_train_jsonl, ""), per_topic)


def _asked(pairs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(p["question"], p["answer"]) for p in pairs]


def _score(client: QAClient, layer: Layer, items: list[tuple[str, str]], preset: GatePreset,
           pool: ThreadPoolExecutor, grounded: bool = False) -> list[dict[str, Any]]:
    """Each (prompt, reference) under `layer` alone (a per-request adapter set): output, F1, ROUGE-L, the
    reference's token log-probabilities as text and as the reply to the prompt, and, `grounded`, the F1 of the
    /gen/ask answer (evidence + citations)."""
    lora = list(layer.adapters)

    def one(item: tuple[str, str]) -> dict[str, Any]:
        prompt, reference = item
        try:
            out = client.chat(prompt, max_tokens=preset.max_tokens, seed=preset.seed, lora=lora).text
            logprobs = client.prompt_logprobs(reference, lora=lora)
            answer = client.answer_logprobs(prompt, reference, lora=lora)
            evidence = client.ask({"prompt": prompt, "max_tokens": preset.max_tokens, "min_score": -1e9,
                                   "lora": [{"path": p, "scale": s} for p, s in lora]}) if grounded else None
        except ServerError as exc:
            return {"error": str(exc)}
        return {"prompt": prompt, "reference": reference, "output": out, "f1": m.token_f1(out, reference),
                "rouge_l": m.rouge_l(out, reference), "logprobs": logprobs, "answer_logprobs": answer,
                "answer_perplexity": _perplexity([answer]),
                "grounded": evidence["answer"] if evidence else None,
                "f1_grounded": m.token_f1(evidence["answer"], reference) if evidence else None}

    return list(pool.map(one, items))


def _perplexity(logprobs: Any) -> float | None:
    try:
        return m.perplexity(logprobs)
    except ValueError:  # nothing scored
        return None


def _cell(results: list[dict[str, Any]]) -> dict[str, Any]:
    done = [r for r in results if "error" not in r]
    return {"f1": m.mean(r["f1"] for r in done), "rouge_l": m.mean(r["rouge_l"] for r in done),
            "perplexity": _perplexity([r["logprobs"] for r in done]),
            "answer_perplexity": _perplexity([r["answer_logprobs"] for r in done]),
            "empty": sum(1 for r in done if not r["output"].strip()),  # answers that ended at their first token
            "f1_grounded": m.mean(r.get("f1_grounded") for r in done), "pairs": len(results),
            "errors": len(results) - len(done),
            "samples": [{k: r[k] for k in SAMPLE_KEYS} for r in done[:SAMPLES]],  # what the numbers came from
            "scores": [{k: r[k] for k in SCORE_KEYS} for r in done]}  # per pair, in held-out order (intervals)


def _gain(own: dict[str, Any], base: dict[str, Any], metric: str) -> float | None:
    """How much `own` beats `base`: points of F1 / ROUGE-L, or the relative drop of a perplexity."""
    if own.get(metric) is None or base.get(metric) is None:
        return None
    if metric in PERPLEXITIES:
        return (base[metric] - own[metric]) / base[metric]
    return own[metric] - base[metric]


def verdict(layer: str, topic: str, matrix: dict, general: dict, preset: GatePreset,
            recall: dict | None = None) -> dict[str, Any]:
    """Passed when the layer beats the base on its own topic by >= min_gain in `metric` and its general prompts'
    perplexity (`general_metric`) rose by at most max_general_ppl_increase; `reasons` says what failed, with the
    numbers, and `diagnosis` (with `recall`, the trained pairs' cells) whether a layer that lost on new questions
    learned its own pairs."""
    own, base = matrix[layer].get(topic) or {}, matrix[BASE].get(topic) or {}
    gain = _gain(own, base, preset.metric)
    mine, theirs = ((recall or {}).get(name, {}).get(topic) or {} for name in (layer, BASE))
    trained_gain = _gain(mine, theirs, preset.metric)
    key = preset.general_metric
    ratio = general[layer][key] / general[BASE][key] if general[layer].get(key) and general[BASE].get(key) else None
    reasons = []
    if gain is None:
        reasons.append(f"no held-out pairs of its topic {topic} were scored")
    elif gain < preset.min_gain:
        reasons.append(f"own-topic {preset.metric} {own[preset.metric]:.3f} vs base {base[preset.metric]:.3f}: gain "
                       f"{gain:+.3f} < {preset.min_gain:+.3f}")
    f1_loss = (base["f1"] - own["f1"]) if own.get("f1") is not None and base.get("f1") is not None else None
    if preset.max_f1_loss is not None and f1_loss is not None and f1_loss > preset.max_f1_loss:
        empty = (f"; {own['empty']} of its {own.get('pairs')} answers were empty (the base's: {base['empty']})"
                 if own.get("empty") else "")
        reasons.append(f"own-topic F1 {own['f1']:.3f} fell {f1_loss:.3f} below the base's {base['f1']:.3f} (limit "
                       f"{preset.max_f1_loss:.3f}): its greedy answers got worse{empty}")
    if ratio is None:
        reasons.append(f"general-prompt {key} could not be measured")
    elif ratio - 1 > preset.max_general_ppl_increase:
        reasons.append(f"general-prompt {key} rose {ratio - 1:+.1%} over the base (limit "
                       f"{preset.max_general_ppl_increase:+.1%})")
    return {"layer": layer, "topic": topic, "own_f1": own.get("f1"), "base_f1": base.get("f1"), "metric": preset.metric,
            "gain": gain, "trained_f1": mine.get("f1"), "base_trained_f1": theirs.get("f1"),
            "trained_gain": trained_gain,
            "general_ppl_ratio": ratio, "general_drift": general[layer].get("drift"), "passed": not reasons,
            "reasons": reasons, "diagnosis": _diagnosis(gain, trained_gain, mine, theirs, preset)}


def _diagnosis(gain: float | None, trained_gain: float | None, mine: dict, theirs: dict,
               preset: GatePreset) -> str | None:
    """For a layer that did not beat the base on new questions of its topic: did it learn its own training pairs?"""
    if gain is None or gain >= preset.min_gain or trained_gain is None:
        return None
    numbers = f"trained-pair {preset.metric} {mine[preset.metric]:.3f} vs base {theirs[preset.metric]:.3f}"
    if trained_gain < preset.min_gain:
        return (f"it does not answer its own training pairs better than the base either ({numbers}): it has not "
                "learned its data; train it longer or at a higher rate (topic preset min_steps / lr)")
    return (f"it answers its own training pairs ({numbers}) but not new questions: it memorized its pairs without "
            "generalizing; give it more varied pairs per fact (an LLM teacher, paraphrases) or a larger base")


def run_gate(settings: Settings, *, model: str | Path | None = None, preset: str = "gate", progress: bool = True,
             echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Score base + every topic layer on MODEL_PATH; write runs/gate-<time>/gate.json + matrix.md, peft/gate.json,
    and each topic layer's verdict into its training_summary.json. Returns the gate record."""
    from tqdm import tqdm

    from strata.presets import load_preset
    from strata.qa.harness import serve_target
    from strata.qa.plan import build_plan
    from strata.qa.prompts import load_prompt_set

    knobs = load_preset(GatePreset, preset)
    layers = topic_layers(settings)
    if not layers:
        raise StrataError(f"no topic layers under {settings.peft} (adapter dirs whose training_summary.json names a "
                          "topic); train them with `strata build train --per-topic` first")
    held = _held_out(settings, knobs.max_pairs_per_topic)
    trained = _trained(settings, knobs.recall_pairs)
    general = [(item.text, item.reference) for item in load_prompt_set(knobs.general).items if item.reference]
    plan = build_plan([folder for folder, _ in layers], [], settings.peft)
    topic_of = {layer.name: topic for layer, (_, topic) in zip(plan[1:], layers)}
    matrix: dict[str, dict[str, Any]] = {}
    probes: dict[str, dict[str, Any]] = {}
    recall: dict[str, dict[str, Any]] = {}
    outputs: dict[str, list[dict[str, Any]]] = {}
    grounded = knobs.grounded and (settings.workspace / INDEX_FILE).is_file()
    recall_topics = {BASE: list(trained), **{name: [t] if t in trained else [] for name, t in topic_of.items()}}
    total = (len(plan) * (sum(len(v) for v in held.values()) + len(general))
             + sum(len(trained[t]) for topics in recall_topics.values() for t in topics))
    started = time.monotonic()
    with serve_target(settings, None, model, plan, None) as url, QAClient(url) as client, \
            ThreadPoolExecutor(max_workers=knobs.concurrency) as pool, \
            tqdm(total=total, desc="gate", unit="req", file=sys.stderr, disable=not progress or None) as bar:
        for layer in plan:
            bar.set_description(f"gate {layer.name}")
            matrix[layer.name] = {}
            for topic, pairs in held.items():
                results = _score(client, layer, _asked(pairs), knobs, pool, grounded)
                matrix[layer.name][topic] = _cell(results)
                bar.update(len(pairs))
            outputs[layer.name] = _score(client, layer, general, knobs, pool)
            bar.update(len(general))
            for topic in recall_topics[layer.name]:
                pairs = trained[topic]
                recall.setdefault(layer.name, {})[topic] = _cell(_score(client, layer, _asked(pairs), knobs, pool))
                bar.update(len(pairs))
    for layer in plan:
        base_out = [r.get("output") for r in outputs[BASE]]
        drift = [m.drift(r["output"], b) for r, b in zip(outputs[layer.name], base_out)
                 if "error" not in r and b is not None]
        probes[layer.name] = _cell(outputs[layer.name]) | {"drift": m.mean(drift)}
    verdicts = {name: verdict(name, topic, matrix, probes, knobs, recall) for name, topic in topic_of.items()}
    record = {"model": str(model or settings.model_path), "preset": asdict(knobs), "topics": list(held),
              "layers": [{"name": l.name, "topic": topic_of.get(l.name), "adapters": [p for p, _ in l.adapters]}
                         for l in plan],
              "matrix": matrix, "general": probes, "recall": recall, "verdicts": verdicts,
              "passed": all(v["passed"] for v in verdicts.values()), "seconds": round(time.monotonic() - started, 1),
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    record["run_dir"] = str(_write(settings, record, plan, layers))
    echo(format_matrix(record))
    return record


def _write(settings: Settings, record: dict[str, Any], plan: list[Layer], layers: list[tuple[Path, str]]) -> Path:
    folder = settings.runs / f"gate-{time.strftime('%Y%m%dT%H%M%S')}"
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / GATE_FILE, record)
    atomic_write_text(folder / "matrix.md", format_matrix(record) + "\n")
    atomic_write_json(settings.peft / GATE_FILE, record | {"run_dir": str(folder)})
    for layer, (path, _) in zip(plan[1:], layers):
        summary = read_json_or_none(path / SUMMARY_FILE) or {}
        summary["gate"] = record["verdicts"][layer.name] | {"row": _lean(record["matrix"][layer.name]),
                                                            "base_row": _lean(record["matrix"][BASE]),
                                                            "general": record["general"][layer.name],
                                                            "run_dir": str(folder),
                                                            "adapter": str(path / ADAPTER_FILE)}
        atomic_write_json(path / SUMMARY_FILE, summary)
    return folder


def _lean(row: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """A matrix row without its per-pair scores and samples (gate.json in run_dir keeps them), for summaries."""
    return {topic: {k: v for k, v in cell.items() if k not in ("samples", "scores")} for topic, cell in row.items()}


def matrix_table(record: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the matrix: rows are layers, columns topics (F1 / ROUGE-L / perplexity of the answer as text /
    as the reply to its question, then the grounded F1 when measured), then the F1 on its own topic's trained pairs
    (the base's in brackets), the general prompts' perplexities (as text / as replies), drift from the base and the
    verdict."""
    topics = record["topics"]
    head = ["layer", *topics, "trained pairs F1 (base)", "general ppl / ppl|q / drift", "gate"]
    rows = []
    for layer in [BASE, *record["verdicts"]]:
        cells = []
        for topic in topics:
            c = record["matrix"][layer].get(topic) or {}
            cells.append(f"{_num(c.get('f1'))} / {_num(c.get('rouge_l'))} / {_num(c.get('perplexity'), 1)} / "
                         f"{_num(c.get('answer_perplexity'), 1)}"
                         + (f" | {_num(c['f1_grounded'])}" if c.get("f1_grounded") is not None else ""))
        g = record["general"][layer]
        v = record["verdicts"].get(layer)
        mark = "-" if v is None else ("passed" if v["passed"] else "FAILED")
        trained = "-" if v is None or v.get("trained_f1") is None else \
            f"{_num(v['trained_f1'])} ({_num(v.get('base_trained_f1'))})"
        general = f"{_num(g.get('perplexity'), 1)} / {_num(g.get('answer_perplexity'), 1)} / {_num(g.get('drift'))}"
        rows.append([layer, *cells, trained, general, mark])
    return head, rows


def format_matrix(record: dict[str, Any]) -> str:
    """The matrix as a plain-text table (matrix_table), the legend and each failed layer's reasons."""
    head, rows = matrix_table(record)
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    preset = record["preset"]
    grounded = any((c or {}).get("f1_grounded") is not None for row in record["matrix"].values() for c in row.values())
    lines.append("cells: F1 / ROUGE-L / perplexity of the held-out answers as text / as replies to their questions "
                 "(ppl|q)"
                 + (" | F1 grounded (/gen/ask, same adapters)" if grounded else "")
                 + f"; gate: own-topic {preset['metric']} gain >= {preset['min_gain']:+.3f} over base"
                 + (f", own-topic F1 loss <= {preset['max_f1_loss']:.3f}" if preset.get("max_f1_loss") is not None
                    else "") + " and general "
                 f"{preset.get('general_metric', 'perplexity')} rise <= {preset['max_general_ppl_increase']:.0%}; "
                 "trained pairs: its own topic's training pairs asked as trained")
    for v in record["verdicts"].values():
        if not v["passed"]:
            lines.append(f"  {v['layer']} FAILED: " + "; ".join(v["reasons"]))
        if v.get("diagnosis"):
            lines.append(f"  {v['layer']}: {v['diagnosis']}")
    return "\n".join(lines)


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"
