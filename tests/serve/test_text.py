"""TextStream: incremental detokenizing (incomplete UTF-8 held back) and stop strings that span token pieces."""

from __future__ import annotations

import pytest

from strata.serve.errors import ApiError
from strata.serve.text import TextStream, check_stops, utf8_split

TEXT = "café € naïve — ok"


def byte_pieces(text: str) -> list[bytes]:
    """The text as the byte-fallback pieces a SentencePiece vocab emits: one byte per token."""
    data = text.encode()
    return [data[i:i + 1] for i in range(len(data))]


def run(pieces: list[bytes], stops: list[str]) -> tuple[list[str], TextStream]:
    stream = TextStream(stops)
    deltas = []
    for piece in pieces:
        deltas.append(stream.feed(piece))
        if stream.stopped:
            break
    if not stream.stopped:
        deltas.append(stream.finish())
    return deltas, stream


def test_utf8_split_finds_an_incomplete_tail():
    assert utf8_split("é".encode()[:1]) == 0
    assert utf8_split(b"ab" + "€".encode()[:2]) == 2
    assert utf8_split("ab€".encode()) == 5
    assert utf8_split(b"ab") == 2 and utf8_split(b"") == 0


@pytest.mark.parametrize("pieces", [byte_pieces(TEXT), [TEXT.encode()[:4], TEXT.encode()[4:9], TEXT.encode()[9:]]])
def test_deltas_are_whole_characters_and_join_to_the_text(pieces):
    deltas, _ = run(pieces, [])
    assert "".join(deltas) == TEXT
    assert all("\ufffd" not in d for d in deltas)
    if len(pieces) > 3:
        assert deltas[3] == "" and deltas[4] == "é"  # the lead byte of é is held until its continuation arrives
    else:
        assert deltas[0] == "caf"


@pytest.mark.parametrize("stops, want", [(["€ na"], "café "), (["é €"], "caf"), (["ok"], "café € naïve — "),
                                         (["zzz"], TEXT), (["ïve", "— o"], "café € na")])
def test_stop_strings_across_pieces(stops, want):
    deltas, stream = run(byte_pieces(TEXT), stops)
    assert "".join(deltas) == want
    assert stream.stopped == (want != TEXT)


def test_a_possible_stop_prefix_is_held_then_released():
    stream = TextStream(["the end"])
    assert stream.feed(b"see th") == "see "  # " th" could start "the end"... (so could "th")
    assert stream.feed(b"ere") == "there"  # ...until it cannot
    assert stream.finish() == ""


def test_stop_lists_are_bounded():
    assert check_stops("x") == ["x"] and check_stops(None) == [] and check_stops(["", "a"]) == ["a"]
    with pytest.raises(ApiError, match="at most 32"):
        check_stops(["s"] * 33)
    with pytest.raises(ApiError, match="256 characters"):
        check_stops(["s" * 257])
