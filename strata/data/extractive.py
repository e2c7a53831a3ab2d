"""The `extractive` question generator: deterministic question/answer pairs from a chunk's own sentences, no model."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from strata.data.chunking import SENTENCE

# (type, pattern on one sentence, question templates). Templates see {subject} (the sentence's grammatical subject),
# {condition} and {section}; the answer is the whole sentence (plus the next one for lists and scenarios when it
# continues the thought), so it is verbatim chunk text and its citation is the chunk's pages.
_NOUN = r"(?P<subject>(?:[A-Z][\w'-]*|[Aa]n?|[Tt]he)(?: [\w'()-]+){0,6}?)"
RULES: tuple[tuple[str, re.Pattern[str], tuple[str, ...]], ...] = (
    ("definition", re.compile("^" + _NOUN + r" (?:is defined as|means|refers to|is|are) (?:a|an|the|one|any|those|"
                                            r"that|when|either) .{12,}"),
     ("What is {subject}?", "How is {subject} defined?", "What does {subject} mean?")),
    ("list", re.compile("^" + _NOUN + r" (?:include|includes|consist of|consists of|comprise|comprises|are|is)"
                                      r"(?::| the following:)? (?:[\w'-]+ ){0,3}[\w'-]+, [\w' -]+,? (?:and|or) .+|"
                                      r"^(?P<lead>[^:,]{8,100}): .+(?:,| and ).+"),
     ("What does {subject} include?", "List what {subject} covers.", "Name the elements of {subject}.")),
    ("scenario", re.compile(r"^(?:If|When|Where|Once|Unless) (?P<condition>[^,]{12,160}), .{12,}"),
     ("Suppose {condition}. What follows under {section}?", "An entity finds that {condition}. What should it do?",
      "What happens when {condition}?")),
    ("rule", re.compile(r"\b(?:must|should|shall|is required to|are required to|may not|cannot|is permitted to|may "
                        r"elect)\b"),
     ("Under {section}, what is required of {subject}?", "What rule applies to {subject}?",
      "What must be done about {subject}?")),
    ("threshold", re.compile(r"\b(?:\d+(?:\.\d+)?\s*(?:%|percent|days?|months?|years?)|ten|twelve|at least|no later "
                             r"than|within|more than|less than|annually|quarterly|each reporting (?:period|date)|at "
                             r"(?:the )?(?:end|inception|commencement))\b", re.I),
     ("What timing or threshold applies to {subject}?", "When, or how often, does this apply to {subject}?",
      "What limit or date is set for {subject}?")),
    ("comparison", re.compile(r"\b(?:whereas|unlike|rather than|in contrast|instead of|differs? from|while)\b", re.I),
     ("How does the treatment of {subject} compare with the alternative?", "What distinguishes {subject}?",
      "Contrast {subject} with the other case in {section}.")),
)
_LEADS = frozenset("because although though if when while since as for in on at by after before unless once where under "
                   "to with without nevertheless however instead".split())  # a clause, not a subject, starts here
# A subject ends at its verb (or the first comma): "The useful life of an intangible asset is ..." -> the useful life ...
_VERB = re.compile(r"^(?:is|are|was|were|has|have|had|must|may|might|can|cannot|should|would|will|shall|does|do|"
                   r"requires?|applies|apply|depends?|includes?|makes?|recognizes?|measures?|presents?|uses?|"
                   r"determines?|allocates?|qualifies|prevails|becomes?|remains?|needs?|equals?|begins|ends|"
                   r"results?|occurs?|arises?|follows?|reflects?|represents?|provides?|gives?|conveys?|contains?|"
                   r"covers?|lacks?|means|refers)$")
SUMMARY = ("What does the guidance on {section} say first?", "Summarise the main point of {section}.",
           "What is the key statement about {section}?")
UNANSWERABLE = "The document does not say."
# Facts no accounting text in the corpus states; a probe is used only when none of its words occur in the chunk.
PROBES = ("What income tax rate does {section} prescribe?", "Which country's courts enforce {section}?",
          "How many employees must an entity have before {section} applies?",
          "What penalty is charged for breaching {section}?", "Who signed {section} into law, and when?")
_WORD = re.compile(r"[a-z0-9]+")
STOP = frozenset("a an the of to in on for and or is are be by with as at that this it its from which when what "
                 "how does do under their there than was were has have not can may must any each such then also so".split())


@dataclass(frozen=True)
class Draft:
    """A candidate pair before filtering."""

    question: str
    answer: str
    type: str


def sentences(text: str) -> list[str]:
    """The chunk's sentences (the chunker's own splitter), whitespace collapsed, fragments dropped."""
    found = [" ".join(s.split()) for part in text.split("\n\n") for s in SENTENCE.split(part)]
    return [s for s in found if len(s.split()) >= 4]


def _pick(options: tuple[str, ...], key: str) -> str:
    return options[int(hashlib.sha256(key.encode()).hexdigest(), 16) % len(options)]


def _clean(phrase: str) -> str:
    """Trim punctuation and spaces; lower-case the first word unless it is an acronym (ASC, IFRS)."""
    phrase = " ".join(phrase.strip(" ,;:").split())
    first = phrase.split(" ", 1)[0] if phrase else ""
    return phrase[0].lower() + phrase[1:] if first and not (first.isupper() and len(first) > 1) else phrase


def subject_of(sentence: str) -> str | None:
    """The words before a sentence's first verb (at most 9, no comma), lower-cased at the start; None if none."""
    words: list[str] = []
    if sentence.split()[0].lower().strip(",") in _LEADS:
        return None
    for word in sentence.split():
        if _VERB.match(word.lower()) or len(words) >= 9:
            break
        words.append(word)
        if word.endswith((",", ";", ":")):
            return None
    return _clean(" ".join(words)) if 2 <= len(words) < 9 else None


def content_words(text: str) -> list[str]:
    """Lower-case words that carry meaning (stop words dropped): what support and duplicate checks compare."""
    return [w for w in _WORD.findall(text.lower()) if w not in STOP]


def generate(chunk: dict[str, Any], previous: str | None, per_type: int = 1, unanswerable: bool = True) -> list[Draft]:
    """Candidate pairs for one chunk: each rule's first `per_type` matching sentences, the section's opening statement
    when `previous` (the section's chunk before this one) is None, and one unanswerable probe (answer: the document
    does not say). Sentences the chunk repeats from `previous` (the chunker's overlap) belong to that chunk."""
    section = chunk.get("heading") or chunk["topic"]
    found = [s for s in sentences(chunk["text"]) if previous is None or s not in " ".join(previous.split())]
    drafts: list[Draft] = []
    if previous is None and found:
        drafts.append(Draft(_pick(SUMMARY, chunk["id"]).format(section=section), found[0], "summary"))
    for kind, pattern, templates in RULES:
        made = 0
        for index, sentence in enumerate(found):
            match = pattern.search(sentence)
            if not match or made >= per_type:
                continue
            fields = {k: _clean(v) for k, v in match.groupdict().items() if v}
            lead = fields.pop("lead", None)
            fields["subject"] = (subject_of(lead) if lead else fields.get("subject") or subject_of(sentence)) or ""
            if fields["subject"].split(" ", 1)[0].lower() in _LEADS:  # a clause ("when none of ..."), not a noun
                fields["subject"] = ""
            if not fields["subject"] and "{subject}" in "".join(templates):
                continue
            answer = sentence
            if kind in ("list", "scenario") and index + 1 < len(found) and len(sentence.split()) < 25:
                answer = f"{sentence} {found[index + 1]}"
            question = _pick(templates, f"{chunk['id']}:{sentence}").format(section=section, **fields)
            drafts.append(Draft(question[0].upper() + question[1:], answer, kind))
            made += 1
    if unanswerable:
        present = set(content_words(chunk["text"]))
        for probe in sorted(PROBES, key=lambda p: hashlib.sha256(f"{chunk['id']}{p}".encode()).hexdigest()):
            if not set(content_words(probe.format(section=""))) & present:
                drafts.append(Draft(probe.format(section=section), UNANSWERABLE, "unanswerable"))
                break
    return drafts

