"""Blind A/B votes in WORKSPACE/console.sqlite (WAL), a per-topic Bradley-Terry leaderboard and preference export."""

from __future__ import annotations

import json
import random
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from strata.files import now_iso

DB_NAME = "console.sqlite"
VOTES = ("A", "B", "tie", "bad")  # "bad": both bad, ranked as a tie and never exported as a preference
SCHEMA = """
CREATE TABLE IF NOT EXISTS matches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created TEXT NOT NULL,
    prompt TEXT NOT NULL,
    topic TEXT NOT NULL,
    a_label TEXT NOT NULL, a_set TEXT NOT NULL, a_output TEXT NOT NULL,
    b_label TEXT NOT NULL, b_set TEXT NOT NULL, b_output TEXT NOT NULL,
    vote TEXT CHECK (vote IN ('A', 'B', 'tie', 'bad')),
    voted TEXT
);
"""
BOOTSTRAP_ROUNDS = 200
ELO_SCALE = 400 / np.log(10)  # Bradley-Terry log-strengths shown on the familiar Elo scale, base = 1000 mean


class Store:
    """The votes; one short connection per operation, so it is safe from any thread or process."""

    def __init__(self, workspace: Path) -> None:
        self.path = Path(workspace) / DB_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=10)
        db.row_factory = sqlite3.Row
        return db

    def add_match(self, prompt: str, topic: str, a: dict[str, Any], b: dict[str, Any]) -> int:
        """a/b: {label, set, output}; returns the match id (the names stay server-side until the vote)."""
        with closing(self._connect()) as db, db:
            cursor = db.execute(
                "INSERT INTO matches (created, prompt, topic, a_label, a_set, a_output, b_label, b_set, b_output) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (now_iso(), prompt, topic, a["label"], json.dumps(a["set"]), a["output"], b["label"],
                 json.dumps(b["set"]), b["output"]))
            return int(cursor.lastrowid)

    def vote(self, match_id: int, vote: str) -> dict[str, Any] | None:
        """Record the vote once (a second vote on the same match is ignored); the match row, None when unknown."""
        with closing(self._connect()) as db, db:
            db.execute("UPDATE matches SET vote = ?, voted = ? WHERE id = ? AND vote IS NULL",
                       (vote, now_iso(), match_id))
            row = db.execute("SELECT * FROM matches WHERE id = ?", (match_id,)).fetchone()
        return dict(row) if row else None

    def voted(self) -> list[dict[str, Any]]:
        with closing(self._connect()) as db:
            return [dict(r) for r in db.execute("SELECT * FROM matches WHERE vote IS NOT NULL ORDER BY id")]


def bradley_terry(players: list[str], games: list[tuple[int, int, float]], iterations: int = 200) -> np.ndarray:
    """Log-strengths by the MM algorithm (Hunter 2004); a game is (i, j, score of i: 1 win, 0.5 tie, 0 loss).
    A tiny prior game against an average player keeps unbeaten or winless players finite."""
    n = len(players)
    wins = np.full(n, 0.5)
    pairs = np.full((n, n), 0.0)
    for i, j, score in games:
        wins[i] += score
        wins[j] += 1 - score
        pairs[i, j] += 1
        pairs[j, i] += 1
    strength = np.ones(n)
    for _ in range(iterations):
        denom = (pairs / (strength[:, None] + strength[None, :])).sum(axis=1) + 1.0 / (strength + 1.0)
        strength = wins / denom
        strength /= np.exp(np.log(strength).mean())
    return np.log(strength)


def _table(games: list[tuple[str, str, float]], seed: int = 0) -> list[dict[str, Any]]:
    players = sorted({p for a, b, _ in games for p in (a, b)})
    index = {p: i for i, p in enumerate(players)}
    coded = [(index[a], index[b], s) for a, b, s in games]
    point = bradley_terry(players, coded)
    rng = random.Random(seed)
    samples = np.array([bradley_terry(players, [rng.choice(coded) for _ in coded]) for _ in range(BOOTSTRAP_ROUNDS)])
    low, high = np.percentile(samples, [2.5, 97.5], axis=0)
    counts = {p: sum(1 for a, b, _ in games if p in (a, b)) for p in players}
    rows = [{"name": p, "rating": round(1000 + ELO_SCALE * point[i], 1), "low": round(1000 + ELO_SCALE * low[i], 1),
             "high": round(1000 + ELO_SCALE * high[i], 1), "votes": counts[p],
             "wins": sum(1 for a, b, s in games if (a == p and s == 1) or (b == p and s == 0))}
            for i, p in enumerate(players)]
    return sorted(rows, key=lambda r: -r["rating"])


SCORES = {"A": 1.0, "B": 0.0, "tie": 0.5, "bad": 0.5}


def leaderboard(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per topic (and "all topics"): rating with a 95 % bootstrap interval, vote and win counts, best first."""
    by_topic: dict[str, list[tuple[str, str, float]]] = {}
    for row in rows:
        game = (row["a_label"], row["b_label"], SCORES[row["vote"]])
        by_topic.setdefault("all topics", []).append(game)
        by_topic.setdefault(row["topic"] or "general", []).append(game)
    return {topic: _table(games) for topic, games in sorted(by_topic.items(), key=lambda kv: kv[0] != "all topics")}


def preferences(rows: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Decisive votes as TRL DPO rows: prompt, chosen, rejected (plain text, the 'standard' format), plus context."""
    for row in rows:
        if row["vote"] not in ("A", "B"):
            continue
        win, lose = ("a", "b") if row["vote"] == "A" else ("b", "a")
        yield {"prompt": row["prompt"], "chosen": row[f"{win}_output"], "rejected": row[f"{lose}_output"],
               "topic": row["topic"], "chosen_adapters": row[f"{win}_label"], "rejected_adapters": row[f"{lose}_label"],
               "match_id": row["id"], "voted": row["voted"], "source": "strata-console-arena"}
