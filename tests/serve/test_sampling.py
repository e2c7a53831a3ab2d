"""Per-slot llama.cpp sampler chains on the real engine: seed, top_k, penalties, logit_bias, ignore_eos."""

from __future__ import annotations

PROMPT = "Revenue is recognized when"


def completion(api, **body) -> dict:
    reply = api.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 10, **body})
    assert reply.status_code == 200, reply.text
    return reply.json()["choices"][0]


def test_seeded_sampling_repeats_and_seeds_differ(api):
    runs = [completion(api, temperature=1.2, top_k=0, top_p=1.0, min_p=0.0, seed=s)["text"] for s in (7, 7, 8, 9)]
    assert runs[0] == runs[1]
    assert len(set(runs[1:])) > 1
    greedy = completion(api, temperature=0)["text"]
    assert completion(api, temperature=1.5, top_k=1, seed=3)["text"] == greedy  # top_k 1 keeps only the argmax


def test_penalties_change_a_repetitive_greedy_reply(api):
    greedy = completion(api, temperature=0, max_tokens=16)["text"]
    assert greedy.count(" the") > 8  # the tiny model repeats itself
    penalized = completion(api, temperature=0, max_tokens=16, repeat_penalty=1.8, presence_penalty=1.0)["text"]
    assert penalized != greedy and penalized.count(" the") < greedy.count(" the")


def test_logit_bias_forces_a_token_and_bad_fields_are_400(api):
    greedy = completion(api, temperature=0, max_tokens=3, logprobs=0)["logprobs"]["tokens"]
    forced = completion(api, temperature=0, max_tokens=3, logprobs=0, logit_bias={"300": 100})["logprobs"]["tokens"]
    assert len(set(forced)) == 1 and forced != greedy  # token 300, three times
    for body, needle in (({"logit_bias": {"999999": 5}}, "outside the vocabulary"),
                         ({"logit_bias": {"x": 1}}, "token ids"), ({"logit_bias": [1]}, "object"),
                         ({"logit_bias": {"5": "high"}}, "finite number"), ({"repeat_penalty": 0}, "greater than 0"),
                         ({"grammar": "root ::= ("}, "grammar"), ({"stop": ["s"] * 40}, "at most 32")):
        reply = api.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 2, **body})
        assert reply.status_code == 400 and needle in reply.json()["error"]["message"], (body, reply.text)


def test_eos_ends_a_reply_unless_ignore_eos(api):
    eos = 2  # the kit's SentencePiece tokenizer: <s>=1, </s>=2
    stopped = completion(api, temperature=0, max_tokens=8, logit_bias={str(eos): 100})
    assert stopped["finish_reason"] == "stop" and stopped["text"] == ""
    ignored = completion(api, temperature=0, max_tokens=8, logit_bias={str(eos): 100}, ignore_eos=True)
    assert ignored["finish_reason"] == "length"
    usage = api.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 8, "temperature": 0,
                                              "ignore_eos": True, "logit_bias": {str(eos): 100}}).json()["usage"]
    assert usage["completion_tokens"] == 8
