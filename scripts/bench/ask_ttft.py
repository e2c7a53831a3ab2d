"""`make bench` (grounded part): time to first token of a streamed POST /gen/ask against a streamed plain chat whose
prompt is the same evidence prompt (same length), so the difference is retrieval plus /gen/ask's own work.
Requests alternate within each round, each after an unrelated prompt (no cached prefix for either); reports medians, the ratio and a 95 % bootstrap interval."""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def first_token_s(client, path: str, body: dict) -> float:
    started = time.perf_counter()
    with client.stream("POST", path, json=body) as reply:
        reply.raise_for_status()
        for line in reply.iter_lines():
            if not line.startswith("data:") or "[DONE]" in line:
                continue
            event = json.loads(line[5:])
            if event.get("delta") or any((c.get("delta") or {}).get("content") for c in event.get("choices") or []):
                return time.perf_counter() - started
    raise RuntimeError(f"{path} streamed no token")


def bootstrap_ratio(a: list[float], b: list[float], draws: int = 2000) -> tuple[float, float]:
    rng = random.Random(0)
    ratios = sorted(statistics.median(rng.choices(a, k=len(a))) / statistics.median(rng.choices(b, k=len(b)))
                    for _ in range(draws))
    return ratios[int(0.025 * draws)], ratios[int(0.975 * draws)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", required=True, help="GGUF to serve")
    p.add_argument("--workspace", required=True, help="workspace holding index.sqlite and its dataset")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    import httpx

    from strata.index.search import Searcher
    from strata.index.store import open_store
    from strata.serve.ask import evidence_prompt
    from strata.serve.config import ServeConfig
    from strata.serve.server import serve_in_thread

    questions = ["When does a contract contain a lease?", "What is a performance obligation?",
                 "How is goodwill tested for impairment?", "What is variable consideration?"]
    searcher = Searcher(open_store(Path(args.workspace) / "index.sqlite"))
    config = ServeConfig(model=Path(args.model), n_ctx=2048, n_threads=args.threads, workspace=Path(args.workspace),
                         parallel=1)
    ask, chat = [], []
    with serve_in_thread(config) as url, httpx.Client(base_url=url, timeout=300) as client:
        for _ in range(2):  # warm-up
            first_token_s(client, "/gen/ask", {"prompt": questions[0], "stream": True, "max_tokens": 2})
        for round_ in range(args.rounds):
            question = questions[round_ % len(questions)]
            prompt = evidence_prompt(question, searcher.search(question, args.top_k))
            pair = [("ask", "/gen/ask", {"prompt": question, "top_k": args.top_k, "stream": True, "max_tokens": 2,
                                         "min_score": -1e9}),
                    ("chat", "/v1/chat/completions", {"messages": [{"role": "user", "content": prompt}],
                                                      "stream": True, "max_tokens": 2, "temperature": 0})]
            for name, path, body in (pair if round_ % 2 == 0 else pair[::-1]):
                body = {**body, "seed": round_}
                # one slot: an unrelated prompt first, so neither request reuses the other's cached evidence
                client.post("/v1/completions", json={"prompt": f"flush {round_} {name}", "max_tokens": 1})
                (ask if name == "ask" else chat).append(first_token_s(client, path, body))
    low, high = bootstrap_ratio(ask, chat)
    row = {"rounds": args.rounds, "ask_ttft_ms_median": round(statistics.median(ask) * 1000, 1),
           "chat_ttft_ms_median": round(statistics.median(chat) * 1000, 1),
           "ratio_ask_over_chat": round(statistics.median(ask) / statistics.median(chat), 3),
           "ratio_95ci": [round(low, 3), round(high, 3)]}
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
