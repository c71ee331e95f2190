"""bandit/features.py: request parsing, featurization, and that nothing raises on text."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bandit.errors import RequestError
from bandit.features import (
    FEATURE_VERSION,
    KEYED_FEATURE_VERSION,
    Context,
    estimate_tokens,
    featurize,
    parse_request,
    sketch,
)
from bandit.kinds import kind_of
from bandit.vwformat import shared_line


def test_messages_split_system_turns_and_last_user() -> None:
    req = parse_request(messages=[
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "second?"}]},
    ], max_tokens=50, metadata={"tenant": "acme", "task": "qa"})
    assert req.system == "You are terse."
    assert req.last_user == "second?"
    ctx = featurize(req)
    assert ctx.namespaces["s"] == ("you", "are", "terse")
    assert ctx.numeric["turns"] == 3.0
    assert ctx.numeric["question"] == 1.0
    assert "tenant=acme" in ctx.namespaces["t"] and "task=qa" in ctx.namespaces["t"]
    assert ctx.max_tokens == 50


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({}, "messages"),
        ({"messages": [], "prompt": "x"}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": "hi"}, "messages"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": [1]}]}, "messages[0].content[0]"),
        ({"messages": [{"role": "user", "content": [{"type": ["file"]}]}]},
         "messages[0].content[0].type"),
        ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "x", "max_tokens": True}, "max_tokens"),
        ({"prompt": "x", "metadata": {"tenant": ["a"]}}, "metadata.tenant"),
        ({"prompt": 5}, "prompt"),
    ],
    ids=["nothing", "both", "empty", "string", "content-int", "part-int", "type-list",
         "max0", "maxbool",
         "meta-list", "prompt-int"],
)
def test_bad_requests_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(RequestError, match="^" + re.escape(field)):
        parse_request(**kwargs)


def test_needs_follow_tools_images_and_json() -> None:
    req = parse_request(
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "what is this"},
            {"type": "image_url", "image_url": {"url": "data:,"}}]}],
        tools=[{"type": "function", "function": {"name": "f"}}],
        response_format={"type": "json_object"},
    )
    ctx = featurize(req)
    assert (ctx.needs_vision, ctx.needs_tools, ctx.needs_json) == (True, True, True)


@pytest.mark.parametrize(
    ("text", "marker"),
    [
        ("```python\nprint(1)\n```", "code"),
        ("def f(x):\n    return x", "code"),
        ("Solve 3x + 4 = 10 for x", "math"),
        ("prove the theorem", "math"),
        ("# Title\n\n- item", "markup"),
        ("<div>hi</div>", "markup"),
    ],
)
def test_markers(text: str, marker: str) -> None:
    assert featurize(parse_request(prompt=text)).numeric[marker] == 1.0


def test_plain_chat_has_no_markers() -> None:
    numeric = featurize(parse_request(prompt="tell me a story about a cat")).numeric
    assert numeric["code"] == numeric["math"] == numeric["markup"] == 0.0


def test_script_and_language_hints() -> None:
    assert "script=cyrillic" in featurize(parse_request(prompt="Привет, как дела?")).namespaces["t"]
    assert "script=cjk" in featurize(parse_request(prompt="今日はいい天気ですね")).namespaces["t"]
    es = featurize(parse_request(prompt="el perro de la casa que come en los campos"))
    assert "lang=es" in es.namespaces["t"]


def test_long_prompts_are_capped_keeping_both_ends() -> None:
    text = "start " + "filler " * 5000 + "finish"
    ctx = featurize(parse_request(prompt=text))
    words = [w for w in ctx.namespaces["u"] if "_" not in w]
    assert len(words) <= 384 and words[0] == "start" and words[-1] == "finish"
    assert ctx.input_tokens == estimate_tokens(text) + 4


def test_context_round_trips_through_dict() -> None:
    ctx = featurize(parse_request(prompt="Write a python function to sort a list.\n\nThanks"))
    assert Context.from_dict(ctx.to_dict()) == ctx


def test_bigrams_are_derived_for_vw_and_stored_contexts_of_before_read_alike() -> None:
    ctx = featurize(parse_request(prompt="Write a python function to sort a list."))
    words = ctx.namespaces["u"]
    assert words == ("write", "a", "python", "function", "to", "sort", "a", "list")
    assert ctx.to_dict()["bigrams"] == ["u"] and "a_python" not in ctx.to_dict()["namespaces"]["u"]
    text = shared_line(ctx)
    assert "|u:0.258199 write a python function to sort a list write_a a_python" in text
    # A context stored before bigrams were derived: words and bigrams in "u" itself.
    old = ctx.to_dict()
    del old["bigrams"]
    old["namespaces"]["u"] = list(ctx.tokens("u"))
    assert len(old["namespaces"]["u"]) == 2 * len(words) - 1
    assert shared_line(Context.from_dict(old)) == text


def test_similar_prompts_have_closer_sketches_than_different_ones() -> None:
    a = sketch("write a python function that sorts a list of numbers".split())
    b = sketch("write a python function that reverses a list of numbers".split())
    c = sketch("the weather in paris is lovely in spring".split())
    dot = lambda x, y: sum(i * j for i, j in zip(x, y, strict=True))  # noqa: E731
    assert dot(a, b) > 0.6 > dot(a, c)


@settings(max_examples=300, deadline=None)
@given(st.text(), st.text(), st.integers(min_value=1, max_value=10**6))
def test_featurize_never_raises_on_any_text(system: str, user: str, max_tokens: int) -> None:
    ctx = featurize(parse_request(
        messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
        max_tokens=max_tokens,
    ))
    assert ctx.input_tokens >= 0
    for tokens in ctx.namespaces.values():
        assert all(" " not in t and "|" not in t and ":" not in t for t in tokens)


_WORDY = st.lists(st.sampled_from(["why", "x", "ünï", "42", "\n", "\n\n", " \n \n", "  ", "\t",
                                   "a.b", "é"]), max_size=600).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), _WORDY))
@example(" ".join(f"w{i}" for i in range(1000)))  # over both caps
@example("intro\n\n" + " ".join(f"w{i}" for i in range(200)))
def test_the_question_namespace_is_the_last_paragraphs_words(user: str) -> None:
    # featurize takes a one-paragraph turn's question words from the turn's words; the
    # same as splitting the last paragraph again, at every length (caps included)
    from bandit.features import _PARAGRAPH_RE, MAX_QUESTION_WORDS, _words

    ctx = featurize(parse_request(prompt=user))
    paragraphs = [p for p in _PARAGRAPH_RE.split(user.strip()) if p.strip()]
    question = paragraphs[-1] if paragraphs else ""
    assert ctx.namespaces["q"] == tuple(_words(question, MAX_QUESTION_WORDS))


# -- keyed featurization: no word of the prompt in what is stored ------------------------

KEY = b"a deployment's feature key"
_HASHED = re.compile(r"~[0-9a-f]{16}")
_TAG = re.compile(r"(script|lang)=[a-z]+|(len|par)=\d+|(head|qhead|shead)=(~[0-9a-f]{16})?"
                  r"|(tenant|task)=.*")
# Words that all start with "zq", which no feature name, tag or hex digest holds: a
# context holding any of them, or any part of one that starts it, shows "zq".
_MARKED = st.text(st.characters(categories=["L", "N"]), max_size=12).map(lambda w: "zq" + w)
_MARKED_TEXT = st.lists(
    st.tuples(_MARKED, st.sampled_from([" ", "  ", "\n", "\n\n", ", ", "? ", ". ", "\t"])),
    max_size=500,
).map(lambda parts: "".join(w + sep for w, sep in parts))


@settings(max_examples=200, deadline=None)
@given(_MARKED_TEXT, _MARKED_TEXT)
@example(" ".join(f"zqw{i}" for i in range(1000)), "")  # over every cap
def test_a_keyed_context_holds_no_word_of_the_prompt(user: str, system: str) -> None:
    req = parse_request(messages=[{"role": "system", "content": system},
                                  {"role": "user", "content": user}],
                        metadata={"tenant": "acme", "task": "qa"})
    ctx = featurize(req, key=KEY)
    stored = json.dumps(ctx.to_dict())
    assert "zq" not in stored and "zq" not in shared_line(ctx)
    for name in ("u", "q", "s"):
        assert all(_HASHED.fullmatch(t) for t in ctx.namespaces[name])
        assert list(ctx.namespaces[name]) == sorted(ctx.namespaces[name])  # no word order
    assert all(_TAG.fullmatch(t) for t in ctx.namespaces["t"])
    assert {"tenant=acme", "task=qa"} <= set(ctx.namespaces["t"])  # metadata, not prompt
    # The same features otherwise: sizes, markers, the language hint, the word counts.
    plain = featurize(req)
    assert ctx.numeric == plain.numeric and ctx.input_tokens == plain.input_tokens
    assert [len(ctx.namespaces[n]) for n in "uqst"] == [len(plain.namespaces[n]) for n in "uqst"]
    assert ctx.dense["e"] == sketch(ctx.namespaces["u"])  # the sketch of what is stored
    assert Context.from_dict(json.loads(stored)) == ctx


def test_keyed_contexts_are_deterministic_per_key_and_differ_across_keys() -> None:
    req = parse_request(messages=[{"role": "system", "content": "You are terse."},
                                  {"role": "user", "content": "Is 2 + 2 four?\n\nSay yes."}])
    a, b, other = featurize(req, key=KEY), featurize(req, key=KEY), featurize(req, key=b"x")
    assert a == b and a.feature_version == other.feature_version == KEYED_FEATURE_VERSION
    for name in ("u", "q", "s"):
        assert not set(a.namespaces[name]) & set(other.namespaces[name])
    heads = [t for t in a.namespaces["t"] if t.startswith(("head=", "qhead=", "shead="))]
    assert len(heads) == 3 and not set(heads) & set(other.namespaces["t"])
    assert a.bigrams == frozenset() and a.tokens("u") == a.namespaces["u"]
    # The order of the words is not kept: the same words in another order, the same bag.
    shuffled = featurize(parse_request(prompt="four 2 + 2 Is?"), key=KEY)
    assert shuffled.namespaces["u"] == featurize(parse_request(prompt="Is 2 + 2 four?"),
                                                 key=KEY).namespaces["u"]
    # A long key works (hashed down to BLAKE2b's 64 bytes); an empty one is refused.
    assert featurize(req, key=b"k" * 100) != featurize(req, key=b"k" * 64)
    with pytest.raises(ValueError, match="key"):
        featurize(req, key=b"")


def test_without_a_key_the_context_is_unchanged() -> None:
    req = parse_request(prompt="Write a python function to sort a list.")
    ctx = featurize(req, key=None)
    assert ctx == featurize(req) and ctx.feature_version == FEATURE_VERSION
    assert ctx.namespaces["u"][:3] == ("write", "a", "python") and ctx.bigrams == {"u"}
    assert "head=write_a_python_function_to_sort" in ctx.namespaces["t"]


def test_keyed_kinds_still_group_templated_prompts() -> None:
    template = "Answer with the letter of the correct choice. Question {}: which is bigger?"
    kinds = {kind_of(featurize(parse_request(prompt=template.format(i)), key=KEY))
             for i in range(5)}
    assert len(kinds) == 1
    (kind,) = kinds
    assert kind is not None and re.fullmatch(r"head=~[0-9a-f]{16}", kind)
    other = kind_of(featurize(parse_request(prompt="Translate this into French: cheese"),
                              key=KEY))
    assert other not in (None, kind)
    system = kind_of(featurize(parse_request(messages=[
        {"role": "system", "content": "You grade essays"},
        {"role": "user", "content": template.format(1)}]), key=KEY))
    assert system is not None and system != kind and kind in system.split("|")
    assert kind_of(featurize(parse_request(prompt="hi", metadata={"task": "qa"}),
                             key=KEY)) == "task=qa"


# -- needs that came after f2: audio, files, reasoning --------------------------------------

@pytest.mark.parametrize(("kwargs", "needs"), [
    ({"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}}]}]},
     {"audio"}),
    ({"prompt": "say it", "modalities": ["text", "audio"]}, {"audio"}),
    ({"prompt": "write it", "modalities": ["text"]}, set()),
    ({"messages": [{"role": "user", "content": [
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE"}},
        {"type": "input_file", "file_data": "x"}, {"type": "document"}]}]}, {"file"}),
    ({"prompt": "think", "reasoning_effort": "high"}, {"reasoning"}),
    ({"prompt": "x", "response_format": {"type": "json_schema", "json_schema": {}}}, {"json"}),
    ({"prompt": "x", "response_format": {"type": "text"}}, set()),
    ({"messages": [{"role": "user", "content": [
        {"type": "input_image", "image_url": "x"}, {"type": "input_audio"}]}],
      "tools": [{"type": "function"}]}, {"vision", "audio", "tools"}),
], ids=["audio-part", "audio-out", "text-out", "file-parts", "reasoning", "json_schema",
        "text-format", "mixed"])
def test_needs_are_read_from_parts_and_parameters(kwargs: dict, needs: set[str]) -> None:
    req = parse_request(**kwargs)
    ctx = featurize(req)
    assert req.needs == ctx.needs == needs
    assert Context.from_dict(ctx.to_dict()) == ctx
    for name in ("audio", "file", "reasoning"):
        assert ctx.numeric.get(name, 0.0) == (1.0 if name in needs else 0.0)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"prompt": "x", "reasoning_effort": 3}, "reasoning_effort"),
    ({"prompt": "x", "modalities": "audio"}, "modalities"),
    ({"prompt": "x", "modalities": [1]}, "modalities"),
], ids=["effort-int", "modalities-string", "modalities-int"])
def test_bad_capability_parameters_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(RequestError, match="^" + field):
        parse_request(**kwargs)


def test_a_request_without_the_later_needs_featurizes_as_before() -> None:
    # A context stored under f2 before audio, file and reasoning were read: the same keys,
    # the same numeric features, the same VW text (pinned), still f2.
    ctx = featurize(parse_request(
        messages=[{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": [
                      {"type": "text", "text": "What is in 3 + 4?"},
                      {"type": "image_url", "image_url": {"url": "x"}}]}],
        tools=[{"type": "function"}], response_format={"type": "json_object"}, max_tokens=9))
    stored = ctx.to_dict()
    assert ctx.feature_version == FEATURE_VERSION == "f2"
    assert set(stored) == {"namespaces", "numeric", "dense", "input_tokens", "max_tokens",
                           "needs_tools", "needs_vision", "needs_json", "feature_version",
                           "bigrams"}
    assert list(ctx.numeric) == [
        "log_chars", "log_tokens", "log_q_chars", "turns", "paragraphs", "lines",
        "log_max_tokens", "code", "math", "markup", "question", "digits", "has_system",
        "tools", "vision", "json"]
    assert shared_line(ctx).split(" |n ")[1].split(" |")[0] == (
        "log_chars:2.89037 log_tokens:2.56495 log_q_chars:2.89037 turns:1 paragraphs:0.693147"
        " log_max_tokens:2.30259 math:1 question:1 digits:0.117647 has_system:1 tools:1"
        " vision:1 json:1")
