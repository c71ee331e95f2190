"""Prompt features: everything the policy knows about a request, computed locally.

:func:`parse_request` validates an OpenAI-style ``messages`` list (or a plain prompt)
into a :class:`Request`; :func:`featurize` turns it into a :class:`Context` of named
feature namespaces. Nothing here touches the network or loads a model, and featurize
never raises on any text.

>>> ctx = featurize(parse_request(prompt="How do I reverse a list in Python?"))
>>> ctx.namespaces["u"][:4]
('how', 'do', 'i', 'reverse')
>>> ctx.numeric["question"]
1.0

With a ``key`` (a per-deployment secret), every word becomes a keyed hash, so a stored
context cannot be read back into the prompt's words:

>>> keyed = featurize(parse_request(prompt="How do I reverse a list in Python?"), key=b"k")
>>> keyed.feature_version, keyed.namespaces["u"][0][0], len(keyed.namespaces["u"][0])
('f2k', '~', 17)
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import math
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from bandit.errors import RequestError

FEATURE_VERSION = "f2"
#: The version of contexts featurized with a key: the same features, every word (and
#: every template tag made of words) a keyed hash, word namespaces as bags (no order,
#: so no bigrams). Stored decisions say by it which feature space they are in.
KEYED_FEATURE_VERSION = FEATURE_VERSION + "k"
#: What starts a hashed token; ``\w`` never matches it, so no word can equal a hash.
HASH_PREFIX = "~"

# Token caps keep featurization and VW time bounded on enormous prompts; the head and
# tail of a long turn are kept because instructions and questions sit at the ends.
MAX_WORDS = 384
MAX_SYSTEM_WORDS = 128
MAX_QUESTION_WORDS = 96
MAX_TAG_LEN = 64
HEAD_WORDS = 6
SKETCH_DIM = 24
_SKETCH_BUCKETS = 1 << 15
_SKETCH_SEED = 20261128

_WORD_RE = re.compile(r"\w+", re.UNICODE)
# On ASCII text ``\w`` is ``[0-9A-Za-z_]``: one str.translate that lowers letters and
# blanks everything else, then str.split, yields exactly the regex's words, five times
# faster (both run in C, but the regex pays per character).
_ASCII_WORDS = str.maketrans(
    {c: c.lower() if c.isalnum() or c == "_" else " " for c in map(chr, range(128))}
)
_PARAGRAPH_RE = re.compile(r"\n\s*\n")
# Markers are cheap substring checks, word-set lookups and anchored patterns that start
# with a literal, run on at most SCAN_CHARS characters: featurization must stay in the
# tens of microseconds on any input.
_CODE_KEYWORDS = r"[ \t]*(?:def|class|import|from|function|const|let|var|public|#include|fn|func)\b"
# A line that starts with a keyword: at the very start (match) or after a newline. The
# literal "\n" lets the regex engine skip to newlines instead of trying every position,
# as a MULTILINE "^" makes it do.
_CODE_FIRST_LINE_RE = re.compile(_CODE_KEYWORDS)
_CODE_LINE_RE = re.compile("\n" + _CODE_KEYWORDS)
_LATEX_MATH = ("\\frac", "\\sum", "\\int", "\\sqrt", "\\cdot")
_MATH_WORDS = frozenset(
    "solve equation integral derivative probability theorem prove lemma matrix".split()
)
_TAG_RE = re.compile(r"</?[a-zA-Z]")
# Each marker with a rarer character it contains: a one-character "in" is a memchr, far
# cheaper than searching for the marker, and when the character is absent so is the marker.
_MARKDOWN = (("#", "\n# "), ("#", "\n## "), ("#", "\n### "), ("-", "\n- "), ("*", "\n* "),
             ("|", "|---"), ("|", "| ---"), ("1", "\n1. "))
_NO_DIGITS = str.maketrans("", "", "0123456789")
_TAG_UNSAFE_RE = re.compile(r"[^\w.-]")
_ASCII_LETTER_RE = re.compile(r"[A-Za-z]")
SCAN_CHARS = 4000
_QUESTION_START = frozenset(
    "what why how when where who which whom whose can could should would is are do does "
    "did will explain".split()
)
_STOPWORDS = {
    "en": frozenset("the and of to is in that it for you with".split()),
    "es": frozenset("el la de que y en los se del las por".split()),
    "fr": frozenset("le la les de et des est une que dans".split()),
    "de": frozenset("der die und das ist nicht ich mit sie den".split()),
    "pt": frozenset("o os de que e do da em um uma não".split()),
    "it": frozenset("il di che e la per non sono gli una".split()),
}
_SCRIPTS = (
    ("latin", 0x0000, 0x024F),
    ("greek", 0x0370, 0x03FF),
    ("cyrillic", 0x0400, 0x04FF),
    ("arabic", 0x0600, 0x06FF),
    ("devanagari", 0x0900, 0x097F),
    ("cjk", 0x3040, 0x9FFF),
    ("hangul", 0xAC00, 0xD7AF),
)
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


@dataclass(frozen=True)
class Request:
    """A validated routing request: the conversation and what the answer needs."""

    system: str = ""
    turns: tuple[tuple[str, str], ...] = ()
    max_tokens: int | None = None
    needs_tools: bool = False
    needs_vision: bool = False
    needs_json: bool = False
    metadata: Mapping[str, str] = field(default_factory=dict)
    needs_audio: bool = False
    needs_file: bool = False
    needs_reasoning: bool = False

    @property
    def needs(self) -> frozenset[str]:
        """The capabilities the answer needs (see :class:`bandit.catalog.ModelSpec`)."""
        return _needs(self.needs_vision, self.needs_tools, self.needs_json,
                      self.needs_audio, self.needs_file, self.needs_reasoning)

    @property
    def last_user(self) -> str:
        for role, text in reversed(self.turns):
            if role == "user":
                return text
        return self.turns[-1][1] if self.turns else ""

    @property
    def total_chars(self) -> int:
        return len(self.system) + sum(len(t) for _, t in self.turns)


_CAPABILITY_NAMES = ("vision", "tools", "json", "audio", "file", "reasoning")


@functools.lru_cache(maxsize=64)
def _needs(*flags: bool) -> frozenset[str]:
    return frozenset(name for name, on in zip(_CAPABILITY_NAMES, flags, strict=True) if on)


# The parts that need a capability, by type: Chat Completions' names and those of the
# other front doors (Responses, Messages), should a translated request carry them.
_IMAGE, _AUDIO, _FILE = 1, 2, 4
_PART_NEEDS = {"image_url": _IMAGE, "image": _IMAGE, "input_image": _IMAGE,
               "input_audio": _AUDIO, "audio": _AUDIO,
               "file": _FILE, "input_file": _FILE, "document": _FILE}


def _content_text(content: Any, where: str) -> tuple[str, int]:
    """Text of a message's content and the kinds of its other parts (_IMAGE | ...)."""
    if content is None:
        return "", 0
    if isinstance(content, str):
        return content, 0
    if not isinstance(content, list):
        raise RequestError(f"{where}.content: must be a string or a list of parts")
    texts: list[str] = []
    kinds = 0
    for j, part in enumerate(content):
        if not isinstance(part, Mapping):
            raise RequestError(f"{where}.content[{j}]: must be an object with a 'type'")
        kind = part.get("type")
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise RequestError(f"{where}.content[{j}].text: must be a string")
            texts.append(text)
        elif not isinstance(kind, str):  # (a list or an object is no dict key either)
            raise RequestError(f"{where}.content[{j}].type: must be a string")
        else:
            kinds |= _PART_NEEDS.get(kind, 0)
    return "\n".join(texts), kinds


def parse_request(
    *,
    messages: Sequence[Mapping[str, Any]] | None = None,
    prompt: str | None = None,
    max_tokens: int | None = None,
    tools: Sequence[Any] | None = None,
    response_format: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    reasoning_effort: str | None = None,
    modalities: Sequence[str] | None = None,
) -> Request:
    """Validate an OpenAI-style request into a :class:`Request`.

    Exactly one of ``messages`` and ``prompt`` is required. What the answer needs is
    read from the request: image, audio and file parts, ``tools``, a JSON
    ``response_format`` (``json_object`` or ``json_schema``), a ``reasoning_effort`` and
    ``"audio"`` among the output ``modalities``:

    >>> req = parse_request(messages=[{"role": "user", "content": [
    ...     {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}}]}],
    ...     reasoning_effort="low", response_format={"type": "json_schema"})
    >>> sorted(req.needs)
    ['audio', 'json', 'reasoning']

    Errors name the bad field:

    >>> parse_request(messages=[{"role": "robot", "content": "hi"}])
    Traceback (most recent call last):
    ...
    bandit.errors.RequestError: messages[0].role: must be one of assistant, developer, \
function, system, tool, user; got 'robot'
    """
    if (messages is None) == (prompt is None):
        raise RequestError("messages: give exactly one of 'messages' or 'prompt'")
    system_parts: list[str] = []
    turns: list[tuple[str, str]] = []
    parts = 0
    if prompt is not None:
        if not isinstance(prompt, str):
            raise RequestError("prompt: must be a string")
        turns.append(("user", prompt))
    else:
        if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
            raise RequestError("messages: must be a list of {role, content} objects")
        if not messages:
            raise RequestError("messages: must not be empty")
        for i, msg in enumerate(messages):
            where = f"messages[{i}]"
            if not isinstance(msg, Mapping):
                raise RequestError(f"{where}: must be an object with 'role' and 'content'")
            role = msg.get("role")
            if not isinstance(role, str) or role not in _ROLES:
                got = repr(role)[:40] if isinstance(role, str) else type(role).__name__
                raise RequestError(
                    f"{where}.role: must be one of {', '.join(sorted(_ROLES))}; got {got}"
                )
            text, kinds = _content_text(msg.get("content"), where)
            parts |= kinds
            if role in ("system", "developer"):
                system_parts.append(text)
            else:
                turns.append((str(role), text))
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise RequestError(f"max_tokens: must be a positive integer, got {max_tokens!r}")
    needs_json = False
    if response_format is not None:
        if not isinstance(response_format, Mapping):
            raise RequestError("response_format: must be an object with a 'type'")
        needs_json = response_format.get("type") in ("json_object", "json_schema")
    if reasoning_effort is not None and not isinstance(reasoning_effort, str):
        raise RequestError("reasoning_effort: must be a string such as 'low' or 'high'")
    if modalities is not None and (
        isinstance(modalities, (str, bytes)) or not isinstance(modalities, Sequence)
        or not all(isinstance(m, str) for m in modalities)
    ):
        raise RequestError("modalities: must be a list of strings such as 'text', 'audio'")
    meta: dict[str, str] = {}
    for key, value in (metadata or {}).items():
        if value is None:
            continue
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise RequestError(f"metadata.{key}: must be a string or number")
        meta[str(key)] = str(value)[:MAX_TAG_LEN]
    return Request(
        system="\n".join(system_parts),
        turns=tuple(turns),
        max_tokens=max_tokens,
        needs_tools=bool(tools),
        needs_vision=bool(parts & _IMAGE),
        needs_json=needs_json,
        metadata=meta,
        needs_audio=bool(parts & _AUDIO) or "audio" in (modalities or ()),
        needs_file=bool(parts & _FILE),
        needs_reasoning=reasoning_effort is not None,
    )


@dataclass(frozen=True)
class Context:
    """Features of one request, grouped in namespaces.

    ``namespaces`` maps a one-letter namespace to word tokens: ``u`` the last user turn
    (words; with their bigrams, see below), ``q`` its last paragraph, ``s`` the system
    prompt and ``t`` categorical tags (tenant, task, script, language). ``numeric``
    holds real-valued features. The remaining fields carry what hard constraints need.
    ``needs_audio``, ``needs_file`` and ``needs_reasoning`` came later: they are stored
    (and their ``numeric`` features present) only when set, so the context of a request
    needing none of them is exactly what it was before they existed.

    ``bigrams`` names the namespaces whose tokens stand for themselves followed by
    every adjacent pair (``a_b``): :func:`featurize` keeps ``u``'s words only and the
    VW text (:func:`bandit.vwformat.shared_line`) adds the bigrams, so a decision
    neither computes nor stores them unless its policy sends ``u`` to VW. Contexts
    stored before carry their bigrams in ``u`` itself and no ``bigrams``: the same text.
    A keyed context (:func:`featurize`'s ``key``) has none: its word namespaces are bags.
    """

    namespaces: Mapping[str, tuple[str, ...]]
    numeric: Mapping[str, float]
    input_tokens: int
    max_tokens: int | None = None
    needs_tools: bool = False
    needs_vision: bool = False
    needs_json: bool = False
    feature_version: str = FEATURE_VERSION
    dense: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    bigrams: frozenset[str] = frozenset()
    needs_audio: bool = False
    needs_file: bool = False
    needs_reasoning: bool = False

    @property
    def needs(self) -> frozenset[str]:
        """The capabilities a model must have to serve this request.

        >>> sorted(Context(namespaces={}, numeric={}, input_tokens=1, needs_tools=True,
        ...                needs_file=True).needs)
        ['file', 'tools']
        """
        return _needs(self.needs_vision, self.needs_tools, self.needs_json,
                      self.needs_audio, self.needs_file, self.needs_reasoning)

    def tokens(self, namespace: str) -> tuple[str, ...]:
        """A namespace's tokens as VW sees them (with bigrams where ``bigrams`` says).

        >>> ctx = Context(namespaces={"u": ("a", "b", "c")}, numeric={}, input_tokens=1,
        ...               bigrams=frozenset({"u"}))
        >>> ctx.tokens("u")
        ('a', 'b', 'c', 'a_b', 'b_c')
        """
        tokens = self.namespaces.get(namespace, ())
        if namespace in self.bigrams:
            # An f-string builds each bigram in one step: 2.4x faster than "_".join.
            pairs = zip(tokens, tokens[1:], strict=False)
            return tokens + tuple([f"{a}_{b}" for a, b in pairs])
        return tokens

    def to_dict(self) -> dict[str, Any]:
        out = {
            "namespaces": {k: list(v) for k, v in self.namespaces.items()},
            "numeric": dict(self.numeric),
            "dense": {k: list(v) for k, v in self.dense.items()},
            "input_tokens": self.input_tokens,
            "max_tokens": self.max_tokens,
            "needs_tools": self.needs_tools,
            "needs_vision": self.needs_vision,
            "needs_json": self.needs_json,
            "feature_version": self.feature_version,
        }
        if self.bigrams:
            out["bigrams"] = sorted(self.bigrams)
        for name in _LATER_NEEDS:
            if getattr(self, name):
                out[name] = True
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Context:
        return cls(
            namespaces={k: tuple(v) for k, v in raw["namespaces"].items()},
            numeric={k: float(v) for k, v in raw["numeric"].items()},
            input_tokens=int(raw["input_tokens"]),
            max_tokens=None if raw.get("max_tokens") is None else int(raw["max_tokens"]),
            needs_tools=bool(raw.get("needs_tools", False)),
            needs_vision=bool(raw.get("needs_vision", False)),
            needs_json=bool(raw.get("needs_json", False)),
            feature_version=str(raw.get("feature_version", FEATURE_VERSION)),
            dense={k: tuple(float(x) for x in v) for k, v in raw.get("dense", {}).items()},
            bigrams=frozenset(str(n) for n in raw.get("bigrams", ())),
            needs_audio=bool(raw.get("needs_audio", False)),
            needs_file=bool(raw.get("needs_file", False)),
            needs_reasoning=bool(raw.get("needs_reasoning", False)),
        )


# Needs added after feature version f2: stored, and featurized, only when set.
_LATER_NEEDS = ("needs_audio", "needs_file", "needs_reasoning")


def estimate_tokens(text: str) -> int:
    """Rough token count: four ASCII characters or one other character per token.

    >>> estimate_tokens("hello world!")
    3
    """
    if not text:
        return 0
    non_ascii = sum(1 for ch in text if ord(ch) > 127) if not text.isascii() else 0
    return math.ceil((len(text) - non_ascii) / 4 + non_ascii)


def _all_words(text: str) -> list[str]:
    if text.isascii():
        return text.translate(_ASCII_WORDS).split()
    return cast("list[str]", _WORD_RE.findall(text.lower()))


def _words(text: str, cap: int) -> list[str]:
    return _cap(_all_words(text), cap)


def _cap(words: list[str], cap: int) -> list[str]:
    # The first and the last words, cap in all. Capping a capped list at a smaller cap
    # gives what capping the whole list would: featurize relies on it.
    if len(words) > cap:
        half = cap // 2
        words = words[:half] + words[-(cap - half) :]
    return words


def _script(text: str) -> str:
    head = text[:2000]
    if head.isascii():
        return "latin" if _ASCII_LETTER_RE.search(head) else "none"
    counts: dict[str, int] = {}
    for ch in head:
        o = ord(ch)
        if o < 0x41 or (ch.isascii() and not ch.isalpha()):
            continue
        for name, lo, hi in _SCRIPTS:
            if lo <= o <= hi:
                counts[name] = counts.get(name, 0) + 1
                break
        else:
            counts["other"] = counts.get("other", 0) + 1
    return max(counts, key=lambda k: counts[k]) if counts else "none"


def _is_math(scan: str, word_set: frozenset[str]) -> bool:
    if _MATH_WORDS & word_set or ("\\" in scan and any(m in scan for m in _LATEX_MATH)):
        return True
    # An operator between digits ("3 + 4", "x^2=9"): found with str.find, which is
    # far faster than a regex that has to try every position.
    for op in "+*/^=<>-":
        start, tries = 0, 0
        while tries < 64:
            i = scan.find(op, start)
            if i < 0:
                break
            before = scan[max(0, i - 2) : i].rstrip()
            after = scan[i + 1 : i + 3].lstrip()
            if before[-1:].isdigit() and after[:1].isdigit():
                return True
            start, tries = i + 1, tries + 1
    return False


def _is_markup(scan: str) -> bool:
    if scan.startswith(("#", "- ", "* ")) or any(
        m in scan for probe, m in _MARKDOWN if probe in scan
    ):
        return True
    return "<" in scan and _TAG_RE.search(scan) is not None


def _is_code(scan: str) -> bool:
    if "`" in scan and "```" in scan:
        return True
    # Counting walks every character; a one-character "in" (memchr) first skips the
    # counts for prose, which has none of these.
    symbols = sum([scan.count(c) for c in "{};" if c in scan])
    return (
        symbols >= 3
        or _CODE_FIRST_LINE_RE.match(scan) is not None
        or _CODE_LINE_RE.search(scan) is not None
    )


def _language(words: Sequence[str], word_set: frozenset[str]) -> str:
    # Distinct stopwords of each language among the first 200 words: a hint, not a
    # classifier, and set intersections keep it to a few microseconds.
    present = word_set if len(words) <= 200 else frozenset(words[:200])
    hits = {lang: len(stops & present) for lang, stops in _STOPWORDS.items()}
    best = max(hits, key=lambda k: (hits[k], k))
    return best if hits[best] > 1 else "unknown"


@functools.lru_cache(maxsize=1)
def _sketch_table() -> np.ndarray:
    # Built on first use (never at import): a fixed Gaussian vector per hash bucket.
    rng = np.random.default_rng(_SKETCH_SEED)
    return rng.standard_normal((_SKETCH_BUCKETS, SKETCH_DIM)).astype(np.float32)


_BUCKET_CACHE: dict[str, int] = {}
_BUCKET_CACHE_MAX = 1 << 17


def _bucket_index(tokens: Sequence[str]) -> np.ndarray:
    # A plain dict is the fastest memo here (vocabularies repeat across prompts); it is
    # cleared when full rather than evicting, which keeps the lookup a C-level call.
    # np.fromiter over the lookups skips the intermediate list and numpy's type
    # discovery that np.array(list) pays per element; a miss raises KeyError at once.
    cache = _BUCKET_CACHE
    try:
        return np.fromiter(map(cache.__getitem__, tokens), dtype=np.int64, count=len(tokens))
    except KeyError:
        pass
    if len(cache) + len(tokens) > _BUCKET_CACHE_MAX:
        cache.clear()
    for t in tokens:
        if t not in cache:
            cache[t] = zlib.crc32(t.encode("utf-8", "surrogatepass")) & (_SKETCH_BUCKETS - 1)
    return np.fromiter(map(cache.__getitem__, tokens), dtype=np.int64, count=len(tokens))


def sketch(tokens: Sequence[str]) -> tuple[float, ...]:
    """A unit-length random projection of a bag of tokens (stable across processes).

    >>> a = sketch(["reverse", "a", "list", "in", "python"])
    >>> len(a), round(sum(x * x for x in a), 4)
    (24, 1.0)
    >>> sketch([]) == (0.0,) * SKETCH_DIM
    True
    """
    if not tokens:
        return (0.0,) * SKETCH_DIM
    # The rows are summed in token order in float32 (np.add.reduce over the outer axis:
    # what ndarray.sum calls, minus its Python wrapper), so the result is bit-for-bit
    # what it always was; do not reorder or deduplicate.
    vec = np.add.reduce(_sketch_table().take(_bucket_index(tokens), axis=0), axis=0)
    # np.linalg.norm of a 1-d float array is exactly sqrt(x.dot(x)), minus its checks;
    # the square root stays numpy's, in float32.
    norm = float(np.sqrt(vec.dot(vec)))
    if norm == 0.0:
        return (0.0,) * SKETCH_DIM
    return tuple((vec / norm).round(5).tolist())  # the method: np.round's wrapper calls it


def _len_without_digits(text: str) -> int:
    if text.isascii():
        return len(text.encode("ascii").translate(None, b"0123456789"))
    return len(text.translate(_NO_DIGITS))


def _tag(value: str) -> str:
    return _TAG_UNSAFE_RE.sub("_", value[: MAX_TAG_LEN * 2])[:MAX_TAG_LEN]


def key_fingerprint(key: bytes) -> str:
    """A public name of a feature key: equal for equal keys, and reveals nothing of it.

    Processes that share a database must featurize with the same key; comparing the
    fingerprints they store tells whether they do.

    >>> key_fingerprint(b"secret") == key_fingerprint(b"secret") != key_fingerprint(b"other")
    True
    >>> len(key_fingerprint(b"secret"))
    16
    """
    return hmac.new(key, b"routebandit feature key", hashlib.sha256).hexdigest()[:16]


class _WordHasher:
    """Keyed 64-bit BLAKE2b hashes of words, as tokens, memoized per key."""

    def __init__(self, key: bytes) -> None:
        if not key:
            raise ValueError("key: must not be empty")
        if len(key) > 64:  # BLAKE2b's longest key; longer ones are hashed down, as HMAC does
            key = hashlib.blake2b(key).digest()
        self._base = hashlib.blake2b(key=key, digest_size=8, person=b"routebandit-word")
        # A plain dict, cleared when full (as _BUCKET_CACHE): vocabularies repeat across
        # prompts, so the usual cost of a word is one C-level lookup.
        self._cache: dict[str, str] = {}

    def _hash(self, word: str) -> str:
        h = self._base.copy()  # the keyed state, without re-keying (40% cheaper)
        h.update(word.encode("utf-8", "surrogatepass"))
        return HASH_PREFIX + h.hexdigest()

    def one(self, word: str) -> str:
        token = self._cache.get(word)
        if token is None:
            token = self._cache[word] = self._hash(word)
        return token

    def tag(self, value: str) -> str:
        return self.one("=" + value) if value else ""

    def bag(self, words: Sequence[str]) -> list[str]:
        """The words' tokens, sorted: the order of the words is not kept."""
        cache = self._cache
        try:
            tokens = list(map(cache.__getitem__, words))
        except KeyError:
            if len(cache) + len(words) > _HASH_CACHE_MAX:
                cache.clear()
            tokens = [self.one(w) for w in words]
        tokens.sort()
        return tokens


_HASH_CACHE_MAX = 1 << 17
_HASHERS: dict[bytes, _WordHasher] = {}


def _hasher(key: bytes) -> _WordHasher:
    hasher = _HASHERS.get(key)
    if hasher is None:
        if len(_HASHERS) >= 8:  # one key per deployment; tests and tools use a few
            _HASHERS.clear()
        hasher = _HASHERS[key] = _WordHasher(key)
    return hasher


_U_BIGRAMS = frozenset({"u"})


def featurize(request: Request, *, key: bytes | None = None) -> Context:
    """Compute the :class:`Context` of a request (pure, local, never raises on text).

    Parameters
    ----------
    request
        The parsed request.
    key
        A secret of the deployment. Without it the word namespaces hold the prompt's
        words, in order. With it, every word (``u``, ``q``, ``s``, the words of the
        ``head=``, ``qhead=`` and ``shead=`` tags and those the sketch ``e`` is made of)
        is replaced by a keyed hash (:data:`HASH_PREFIX` and 16 hex digits), the word
        namespaces are sorted bags (the words' order is not kept, so ``u`` has no
        bigrams) and ``feature_version`` is :data:`KEYED_FEATURE_VERSION`. The same
        prompt and key give the same context; without the key it cannot be read back
        into words. Markers, the language hint, sizes and metadata tags are the same
        either way. An empty key raises ``ValueError``.

    Examples
    --------
    >>> req = parse_request(prompt="Translate to French: the cheese is old")
    >>> plain, keyed = featurize(req), featurize(req, key=b"deployment secret")
    >>> plain.namespaces["t"][2], keyed.namespaces["t"][2][:6]
    ('head=translate_to_french_the_cheese_is', 'head=~')
    >>> any("cheese" in t for ns in keyed.namespaces.values() for t in ns)
    False
    >>> keyed == featurize(req, key=b"deployment secret")
    True
    """
    last = request.last_user
    words = _words(last, MAX_WORDS)
    paragraphs = [p for p in _PARAGRAPH_RE.split(last.strip()) if p.strip()]
    question = paragraphs[-1] if paragraphs else ""
    # One paragraph: the question is the whole turn (stripped), so its words are the
    # turn's, capped again (MAX_QUESTION_WORDS <= MAX_WORDS) rather than split again.
    q_words = (_cap(words, MAX_QUESTION_WORDS) if len(paragraphs) == 1
               else _words(question, MAX_QUESTION_WORDS))
    s_words = _words(request.system, MAX_SYSTEM_WORDS)
    input_tokens = estimate_tokens(request.system) + sum(
        estimate_tokens(t) + 4 for _, t in request.turns
    )
    stripped = last.rstrip()
    scan = last[:SCAN_CHARS]
    word_set = frozenset(words)
    first_word = words[0] if words else ""
    numeric = {
        "log_chars": math.log1p(len(last)),
        "log_tokens": math.log1p(input_tokens),
        "log_q_chars": math.log1p(len(question)),
        "turns": float(min(len(request.turns), 50)),
        "paragraphs": math.log1p(len(paragraphs)),
        "lines": math.log1p(last.count("\n")),
        "log_max_tokens": math.log1p(request.max_tokens or 0),
        "code": 1.0 if _is_code(scan) else 0.0,
        "math": 1.0 if _is_math(scan, word_set) else 0.0,
        "markup": 1.0 if _is_markup(scan) else 0.0,
        "question": 1.0 if stripped.endswith("?") or first_word in _QUESTION_START else 0.0,
        # Deleting the digits runs in C (bytes.translate for ASCII text is faster still);
        # counting them is then a subtraction.
        "digits": (len(scan) - _len_without_digits(scan)) / max(1, len(scan)),
        "has_system": 1.0 if request.system else 0.0,
        "tools": 1.0 if request.needs_tools else 0.0,
        "vision": 1.0 if request.needs_vision else 0.0,
        "json": 1.0 if request.needs_json else 0.0,
    }
    # Features of the later needs exist only when set (VW reads a missing one as 0), so
    # a request needing none of them featurizes byte for byte as before (still f2).
    if request.needs_audio:
        numeric["audio"] = 1.0
    if request.needs_file:
        numeric["file"] = 1.0
    if request.needs_reasoning:
        numeric["reasoning"] = 1.0
    language = _language(words, word_set)
    # Coarse, low-dimensional tags let the policy separate kinds of traffic after a
    # handful of examples: the opening words of the turn and of its last paragraph
    # (templated prompts share them) and bucketed sizes.
    head_words = _all_words(last[:200])[:HEAD_WORDS]
    head = _tag("_".join(head_words))
    qhead = _tag("_".join(q_words[:3]))
    shead = _tag("_".join(s_words[:HEAD_WORDS])) if s_words else None
    if key is not None:
        # Everything above that is not a word (markers, the language hint, sizes) is
        # as without a key; from here on only hashes of the words are used, so the
        # policy, the kinds, the VW text and what is stored all see the same tokens.
        hasher = _hasher(key)
        words, q_words, s_words = hasher.bag(words), hasher.bag(q_words), hasher.bag(s_words)
        # A template tag is one hash of its whole value (equal templates, equal tags),
        # "=" first so that it never equals a word's ("=" is no word character).
        head, qhead = hasher.tag(head), hasher.tag(qhead)
        shead = None if shead is None else hasher.tag(shead)
    tags = [
        f"script={_script(last)}",
        f"lang={language}",
        "head=" + head,
        "qhead=" + qhead,
        f"len={int(math.log2(1 + len(last)))}",
        f"par={min(len(paragraphs), 12)}",
    ]
    if shead is not None:
        tags.append("shead=" + shead)
    for name in ("tenant", "task"):
        if name in request.metadata:
            tags.append(f"{name}={_tag(request.metadata[name])}")
    namespaces = {
        "u": tuple(words),  # and, without a key, their bigrams: Context.bigrams
        "q": tuple(q_words),
        "s": tuple(s_words),
        "t": tuple(tags),
    }
    return Context(
        namespaces=namespaces,
        numeric=numeric,
        dense={"e": sketch(words)},
        input_tokens=input_tokens,
        max_tokens=request.max_tokens,
        needs_tools=request.needs_tools,
        needs_vision=request.needs_vision,
        needs_json=request.needs_json,
        feature_version=FEATURE_VERSION if key is None else KEYED_FEATURE_VERSION,
        bigrams=_U_BIGRAMS if key is None else frozenset(),
        needs_audio=request.needs_audio,
        needs_file=request.needs_file,
        needs_reasoning=request.needs_reasoning,
    )
