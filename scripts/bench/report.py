"""Summarise raw bench results into medians and ratios, and write the Markdown table, JSON and bar chart."""

from __future__ import annotations

import json
import os
from pathlib import Path

from measure import median, percentile
from peers import LLAMA_CPP_PYTHON, LLAMA_SERVER, STRATA, STRATA_NP1
from stats import fmt_interval, ratio_interval

PEERS = (STRATA, STRATA_NP1, LLAMA_SERVER, LLAMA_CPP_PYTHON)
# the samples behind each summary key (one per completion, per 4-stream run, per switch or per chat)
SAMPLES = {
    "decode_tps": lambda d: [s["decode_tps"] for s in d.get("single", [])],
    "ttft_ms": lambda d: [s["ttft_s"] for s in d.get("single", [])],
    "adapter_decode_tps": lambda d: [s["decode_tps"] for s in d.get("single_adapter", [])],
    "concurrent_same_tps": lambda d: [c["aggregate_tps"] for c in d.get("concurrent_same", [])],
    "concurrent_mixed_tps": lambda d: [c["aggregate_tps"] for c in d.get("concurrent_mixed", [])],
    "switch_p50_ms": lambda d: d.get("switch_id", []),
    "chat_ttft2_ms": lambda d: [c["ttft2_s"] for c in d.get("chat", [])],
}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _ms(value: float | None) -> float | None:
    return value * 1000 if value is not None else None


def _pct_ms(values: list[float], q: float) -> float | None:
    return percentile(values, q) * 1000 if values else None


def summarise(raw: dict) -> dict:
    """Medians per peer and measure, the bandwidth bound and each peer's fraction of it, and the ratios."""
    bound = raw["bandwidth"]["bandwidth_gbs"] * 1e9 / raw["model"]["weight_bytes_per_token"]
    peers = {}
    for name, data in raw["peers"].items():
        single = data.get("single", [])
        decode = median([s["decode_tps"] for s in single])
        chat = data.get("chat", [])
        long = data.get("long", [])
        peers[name] = {
            "decode_tps": decode,
            "ttft_ms": _ms(median([s["ttft_s"] for s in single])),
            "bound_fraction": _ratio(decode, bound),
            "adapter_decode_tps": median([s["decode_tps"] for s in data.get("single_adapter", [])]),
            "concurrent_same_tps": median([c["aggregate_tps"] for c in data.get("concurrent_same", [])]),
            "concurrent_mixed_tps": median([c["aggregate_tps"] for c in data.get("concurrent_mixed", [])]),
            "long_ratio": median([x["ratio"] for x in long]),
            "long_streamed_s": median([x["streamed_s"] for x in long]),
            "long_whole_s": median([x["whole_s"] for x in long]),
            "post_during_p50_ms": _pct_ms(data.get("post_during_streams", []), 50),
            "post_during_p95_ms": _pct_ms(data.get("post_during_streams", []), 95),
            "switch_p50_ms": _pct_ms(data.get("switch_id", []), 50),
            "switch_p95_ms": _pct_ms(data.get("switch_id", []), 95),
            "chat_ttft1_ms": _ms(median([c["ttft1_s"] for c in chat])),
            "chat_ttft2_ms": _ms(median([c["ttft2_s"] for c in chat])),
            "chat_turn_ratio": median([c["ttft2_s"] / c["ttft1_s"] for c in chat]),
            "first_load_s": median(data.get("first_load", [])),
            "reload_s": median(data.get("reload", [])),
            "start_s": median(data.get("start", [])),
            "configs": data.get("configs", {}),
            "errors": data.get("errors", []),
        }
    get = lambda peer, key: peers.get(peer, {}).get(key)  # noqa: E731
    vs = lambda key, peer=LLAMA_SERVER, subject=STRATA: _ratio(get(subject, key), get(peer, key))  # noqa: E731
    ratios = {
        "decode_vs_llama_server": vs("decode_tps"),
        "decode_vs_llama_cpp_python": vs("decode_tps", LLAMA_CPP_PYTHON),
        "ttft_vs_llama_server": vs("ttft_ms"),
        "ttft_vs_llama_cpp_python": vs("ttft_ms", LLAMA_CPP_PYTHON),
        "adapter_decode_vs_llama_server": vs("adapter_decode_tps"),
        "np1_decode_vs_llama_server": vs("decode_tps", subject=STRATA_NP1),
        "np1_adapter_decode_vs_llama_server": vs("adapter_decode_tps", subject=STRATA_NP1),
        "concurrent_same_vs_llama_server": vs("concurrent_same_tps"),
        "concurrent_mixed_vs_llama_server": vs("concurrent_mixed_tps"),
        "switch_p50_vs_llama_server": vs("switch_p50_ms"),
        "chat_ttft2_vs_llama_server": vs("chat_ttft2_ms"),
        "reload_llama_server_over_first_load": _ratio(get(LLAMA_SERVER, "reload_s"), get(STRATA, "first_load_s")),
        "reload_llama_cpp_python_over_first_load": _ratio(get(LLAMA_CPP_PYTHON, "reload_s"),
                                                          get(STRATA, "first_load_s")),
    }
    intervals = {}
    for _, key, _, peer, _, ratio_key, _, subject in ROWS:
        if subject in raw["peers"] and peer in raw["peers"]:
            intervals[ratio_key] = ratio_interval(SAMPLES[key](raw["peers"][subject]), SAMPLES[key](raw["peers"][peer]))
    return {"bound_tps": bound, "peers": peers, "ratios": ratios, "intervals": intervals}


def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and abs(value) < 10 ** -digits and value != 0:
        return f"{value:.2g}"
    return f"{value:.{digits}f}"


# (label, summary key, digits, peer whose value is compared, its launch role, ratio key, target, strata launch)
ROWS = [
    ("Decode tok/s, 1 stream, bare model", "decode_tps", 2, LLAMA_SERVER, "ls-bare", "decode_vs_llama_server",
     "≥ 1.0", STRATA),
    ("… strata --parallel 1 vs llama-server -np 1", "decode_tps", 2, LLAMA_SERVER, "ls-bare",
     "np1_decode_vs_llama_server", "≥ 1.0", STRATA_NP1),
    ("… vs llama-cpp-python's server", "decode_tps", 2, LLAMA_CPP_PYTHON, "lcp", "decode_vs_llama_cpp_python",
     "≥ 1.1", STRATA),
    ("TTFT ms, 1 stream, bare model", "ttft_ms", 0, LLAMA_SERVER, "ls-bare", "ttft_vs_llama_server", "lower",
     STRATA),
    ("Decode tok/s, 1 stream, one adapter at scale 1", "adapter_decode_tps", 2, LLAMA_SERVER, "ls-adapter",
     "adapter_decode_vs_llama_server", "≥ 1.0", STRATA),
    ("… strata --parallel 1 vs llama-server -np 1 --lora", "adapter_decode_tps", 2, LLAMA_SERVER, "ls-adapter",
     "np1_adapter_decode_vs_llama_server", "≥ 1.0", STRATA_NP1),
    ("Aggregate tok/s, 4 streams, same adapter", "concurrent_same_tps", 2, LLAMA_SERVER, "ls-same",
     "concurrent_same_vs_llama_server", "≥ 1.0", STRATA),
    ("Aggregate tok/s, 4 streams, a different adapter each (per-request lora)", "concurrent_mixed_tps", 2,
     LLAMA_SERVER, "ls-mixed", "concurrent_mixed_vs_llama_server", "≥ 0.95", STRATA),
    ("Adapter switch p50 ms, idle (POST /lora-adapters, id form)", "switch_p50_ms", 2, LLAMA_SERVER, "ls-mixed",
     "switch_p50_vs_llama_server", "≤ 1 ms", STRATA),
    ("Chat turn 2 TTFT ms (turn 1 cached)", "chat_ttft2_ms", 0, LLAMA_SERVER, "ls-same",
     "chat_ttft2_vs_llama_server", "lower", STRATA),
]
STRATA_ONLY = [
    ("Long stream: streamed ÷ unstreamed time", "long_ratio", 3, "≤ 1.1"),
    ("POST /lora-adapters p50 ms while 4 streams run", "post_during_p50_ms", 2, "≤ 5 ms"),
    ("POST /lora-adapters p95 ms while 4 streams run", "post_during_p95_ms", 2, ""),
    ("Chat TTFT, turn 2 ÷ turn 1", "chat_turn_ratio", 2, "< 1"),
    ("New adapter by path, s (runtime load)", "first_load_s", 3, ""),
]


def markdown(raw: dict, summary: dict) -> str:
    """The results table (each peer's configuration named) plus what a reader needs to reproduce it."""
    p, r, ci = summary["peers"], summary["ratios"], summary.get("intervals", {})
    s = p.get(STRATA, {})
    cfg, model, bw = raw["config"], raw["model"], raw["bandwidth"]
    lines = ["| Measure | strata serve | peer | peer's configuration | strata ÷ peer [95 % interval] | target |",
             "|---|---:|---:|---|---:|---|"]
    for label, key, digits, peer, role, ratio_key, target, subject in ROWS:
        if subject not in p:
            continue
        other = p.get(peer)
        value = _fmt(other.get(key), digits) if other else "not run"
        config = f"{peer}: {other['configs'].get(role, '')}" if other else peer
        shown = fmt_interval(ci[ratio_key]) if ci.get(ratio_key) else _fmt(r[ratio_key], 2)
        lines.append(f"| {label} | {_fmt(p[subject].get(key), digits)} | {value} | {config} | {shown} | "
                     f"{target} |")
    for label, key, digits, target in STRATA_ONLY:
        lines.append(f"| {label} | {_fmt(s.get(key), digits)} | | | | {target} |")
    for peer in (LLAMA_SERVER, LLAMA_CPP_PYTHON):
        if p.get(peer, {}).get("reload_s") is not None:
            ratio = r["reload_llama_server_over_first_load" if peer == LLAMA_SERVER
                      else "reload_llama_cpp_python_over_first_load"]
            lines.append(f"| New adapter by restart with one more --lora, s (stop + start until ready) | "
                         f"{_fmt(s.get('first_load_s'), 3)} | {_fmt(p[peer]['reload_s'], 2)} | {peer} | "
                         f"{_fmt(_ratio(1, ratio), 3)} | lower |")
    notes = [
        "",
        f"- strata's launch: {s.get('configs', {}).get('strata', 'not run')}.",
        "- Each ratio is the ratio of the two medians, with a 95 % percentile-bootstrap interval (each side's samples "
        "resampled on their own; every launch ran once per round, the rounds interleaved).",
        f"- Model: {model.get('description') or 'random-weight Llama'} ({model['spec']['model']['layers']} layers, "
        f"hidden {model['spec']['model']['hidden']}), {model['spec']['quant']}, {model['gguf_bytes'] / 1e6:.0f} MB GGUF; "
        f"{model['weight_bytes_per_token'] / 1e6:.0f} MB of weights read per decoded token. Bandwidth (numpy, "
        f"{bw['threads']} threads) {bw['bandwidth_gbs']:.1f} GB/s → decode bound {summary['bound_tps']:.1f} tok/s; "
        "fraction reached, 1 stream bare: " + ", ".join(
            f"{name} {_fmt(p[name]['bound_fraction'], 2)}" for name in PEERS if name in p) + ".",
        f"- {cfg['rounds']} interleaved rounds × {cfg['repeats']} streamed greedy completions of {cfg['max_tokens']} "
        f"tokens per single-stream measure; 4 streams × {cfg['concurrent_tokens']} tokens; long stream "
        f"{cfg['long_tokens']} tokens; {cfg['switches']} switches per round; threads {cfg['threads']}, n_ctx "
        f"{cfg['n_ctx']} per sequence, flash attention off, ignore_eos on every request.",
    ]
    if raw.get("machine"):
        m = raw["machine"]
        busy = max(m["loadavg_start"][0], m["loadavg_end"][0]) > m["cores"]
        notes.append(f"- Machine: {m['cpu']}, {m['cores']} cores, {m['mem_gb']} GB RAM; load average "
                     f"{m['loadavg_start'][0]:.1f} at start, {m['loadavg_end'][0]:.1f} at end"
                     + (" (other jobs shared the CPU: absolute numbers are depressed)." if busy else "."))
    for peer, data in p.items():
        for error in data["errors"]:
            notes.append(f"- {peer}: {error}")
    notes += [f"- {note}" for note in raw.get("notes", [])]
    return "\n".join(lines + notes) + "\n"


def chart(summary: dict, dest: Path) -> None:
    """Four panels: 1-stream decode (bare, adapter), 4-stream aggregate (same, mixed), switch p50, chat TTFT."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = summary["peers"]
    names = [n for n in PEERS if n in p]
    colors = {STRATA: "#2a7ab0", STRATA_NP1: "#86b8db", LLAMA_SERVER: "#e08a1e", LLAMA_CPP_PYTHON: "#6a9f3a"}
    panels = [("1 stream, tok/s", ["decode_tps", "adapter_decode_tps"], ["bare", "adapter"]),
              ("4 streams, aggregate tok/s", ["concurrent_same_tps", "concurrent_mixed_tps"], ["same", "mixed"]),
              ("Adapter switch p50, ms", ["switch_p50_ms", "post_during_p50_ms"], ["idle", "during streams"]),
              ("Chat TTFT, ms", ["chat_ttft1_ms", "chat_ttft2_ms"], ["turn 1", "turn 2"])]
    fig, axes = plt.subplots(1, len(panels), figsize=(18, 4.2))
    width = 0.8 / max(1, len(names))
    for ax, (title, keys, labels) in zip(axes, panels):
        for j, name in enumerate(names):
            values = [p[name].get(k) for k in keys]
            xs = [i + j * width for i, v in enumerate(values) if v is not None]
            ys = [v for v in values if v is not None]
            ax.bar(xs, ys, width, label=name, color=colors[name])
            for x, y in zip(xs, ys):
                ax.annotate(_fmt(y, 1), (x, y), ha="center", va="bottom", fontsize=7)
        ax.set_xticks([i + width * (len(names) - 1) / 2 for i in range(len(keys))], labels)
        ax.set_title(title, fontsize=10)
    axes[0].axhline(summary["bound_tps"], color="grey", linestyle="--", linewidth=1)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    tmp = dest.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, dest)


def write(raw: dict, out_dir: Path) -> tuple[dict, str]:
    """Write results.json, results.md and results.png into out_dir (each atomically); return summary and table."""
    summary = summarise(raw)
    table = markdown(raw, summary)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in (("results.json", json.dumps({**raw, "summary": summary}, indent=2)), ("results.md", table)):
        tmp = out_dir / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out_dir / name)
    chart(summary, out_dir / "results.png")
    return summary, table
