"""Prompt embeddings for clusters of meaning (``bandit.clusters``): local, remote or none.

``local`` is wordllama's 256-number embedding from the weights its wheel carries,
loaded once at start-up with downloads disabled (it never reaches the network); a
wheel whose weights cannot be read fails start-up naming the ``embedder`` setting.
``openai`` asks any OpenAI-compatible ``/v1/embeddings`` endpoint, within
``timeout_s``: an answer that is late, an error or malformed is a *fallback*, and the
decision goes on without clusters (counted by the caller, marked on the decision).
``none`` embeds nothing.

What is embedded: the last user turn (the whole prompt if there is none), at most its
first ``HEAD_CHARS`` and last ``TAIL_CHARS`` characters, so the cost stays flat however
long the prompt (a 2,000-character text costs wordllama ~400 us, 1,000 ~200 us).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import httpx
import numpy as np
import numpy.typing as npt

from bandit.errors import RouteBanditError

HEAD_CHARS = 600
TAIL_CHARS = 400
#: What a decision's ``embedding`` says: embedded, no embedder, nothing to embed (an
#: empty or blank turn), or why it fell back.
OK, OFF, EMPTY = "ok", "off", "empty"
FALLBACKS = ("timeout", "error", "malformed")
EMBEDDERS = ("local", "none", "openai")

Vector = npt.NDArray[np.float64]
log = logging.getLogger("routebandit.embedder")


class EmbedderError(RouteBanditError):
    """The embedder cannot start (the message names the setting)."""


@dataclass(frozen=True)
class Embedded:
    """An embedding, or ``None`` with the reason (``off``, ``empty`` or one of
    ``FALLBACKS``)."""

    vector: Vector | None
    status: str


NOTHING = Embedded(None, OFF)


def bounded(text: str) -> str:
    """At most the first ``HEAD_CHARS`` and last ``TAIL_CHARS`` characters of ``text``."""
    if len(text) <= HEAD_CHARS + TAIL_CHARS:
        return text
    return text[:HEAD_CHARS] + "\n" + text[-TAIL_CHARS:]


class Embedder(Protocol):
    name: str

    async def embed(self, text: str) -> Embedded: ...

    async def aclose(self) -> None: ...


class NoEmbedder:
    name = "none"

    async def embed(self, text: str) -> Embedded:
        return NOTHING

    async def aclose(self) -> None:
        return None


@lru_cache(maxsize=1)
def _wordllama() -> Any:
    import wordllama
    from wordllama import WordLlama

    # Its loader looks for the tokenizer it ships under the wrong folder name; pointing
    # its cache at the package finds both files, and nothing is downloaded.
    return WordLlama.load(dim=256, cache_dir=Path(wordllama.__file__).parent,
                          disable_download=True)


class LocalEmbedder:
    """wordllama, in this process (CPU, inline: ~200 us for a bounded text)."""

    name = "local"

    def __init__(self) -> None:
        try:  # once per process: every app in a test run shares the loaded weights
            self._model = _wordllama()
        except Exception as exc:
            raise EmbedderError(
                f"setting 'embedder' (ROUTEBANDIT_EMBEDDER) is 'local' but wordllama's "
                f"weights cannot be read ({type(exc).__name__}: {exc}); reinstall "
                f"wordllama or set embedder to 'none' or 'openai'") from exc
        # wordllama's embed() is the mean of the token rows of its table; done here with
        # the tokenizer's encode_batch_fast (no offsets: 110 us instead of 160 for 1,000
        # characters), or through embed() if a version lacks either part.
        tokenizer = getattr(self._model, "tokenizer", None)
        self._table: npt.NDArray[np.float32] | None = getattr(self._model, "embedding", None)
        self._encode: Any = (getattr(tokenizer, "encode_batch_fast", None)
                             or getattr(tokenizer, "encode_batch", None))

    def embed_now(self, text: str) -> Embedded:
        if not text.strip():
            return Embedded(None, EMPTY)
        # The tokenizer refuses lone surrogates (JSON can carry them): replaced first.
        text = bounded(text).encode("utf-8", "replace").decode("utf-8")
        try:
            v = self._mean_of_tokens(text)
        except Exception:  # whatever the text: the decision goes on without clusters
            log.warning("wordllama could not embed a prompt", exc_info=True)
            return Embedded(None, "error")
        return Embedded(v, OK)

    def _mean_of_tokens(self, text: str) -> Vector:
        if self._table is None or self._encode is None:
            return np.asarray(self._model.embed([text]), dtype=np.float64).reshape(-1)
        ids = np.asarray(self._encode([text], is_pretokenized=False,
                                      add_special_tokens=False)[0].ids, dtype=np.intp)
        np.clip(ids, 0, len(self._table) - 1, out=ids)
        if ids.size == 0:
            return np.zeros(self._table.shape[1])
        out: Vector = self._table[ids].mean(axis=0, dtype=np.float64)
        return out

    async def embed(self, text: str) -> Embedded:
        return self.embed_now(text)

    async def aclose(self) -> None:
        return None


class OpenAIEmbedder:
    """Any OpenAI-compatible ``POST {base_url}/embeddings``, bounded by ``timeout_s``."""

    name = "openai"

    def __init__(self, *, base_url: str, model: str, api_key: str | None,
                 timeout_s: float, client: httpx.AsyncClient | None = None) -> None:
        self._url = base_url.rstrip("/") + "/embeddings"
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.model = model
        self.timeout_s = timeout_s
        # The app passes a client whose every connection the egress policy checks.
        self._client = client or httpx.AsyncClient(follow_redirects=False, trust_env=False)

    async def embed(self, text: str) -> Embedded:
        if not text.strip():
            return Embedded(None, EMPTY)
        try:
            # wait_for bounds the whole exchange (httpx's timeout is per phase).
            response = await asyncio.wait_for(
                self._client.post(self._url, headers=self._headers,
                                  timeout=self.timeout_s,
                                  json={"model": self.model, "input": bounded(text)}),
                self.timeout_s)
        except (asyncio.TimeoutError, httpx.TimeoutException):
            return Embedded(None, "timeout")
        except httpx.HTTPError:
            return Embedded(None, "error")
        if response.status_code != 200:
            return Embedded(None, "error")
        try:
            raw = response.json()["data"][0]["embedding"]
            v = np.asarray(raw, dtype=np.float64).reshape(-1)
        except (ValueError, KeyError, IndexError, TypeError):
            return Embedded(None, "malformed")
        if v.size == 0 or not all(math.isfinite(x) for x in v.tolist()):
            return Embedded(None, "malformed")
        return Embedded(v, OK)

    async def aclose(self) -> None:
        await self._client.aclose()


def make_embedder(settings: Any, *, egress: Any = None) -> Embedder:
    """The embedder ``settings.embedder`` names (``settings.embedder_openai`` for its
    options); ``egress`` (serving/egress.py) vets the URL and the key variable at
    start-up and every connection after (the gateway's guarded client)."""
    kind = settings.embedder
    if kind == "none":
        return NoEmbedder()
    if kind == "local":
        return LocalEmbedder()
    opts = settings.embedder_openai
    if not opts.base_url or not opts.model:
        raise EmbedderError("setting 'embedder' is 'openai': set embedder_openai.base_url "
                            "and embedder_openai.model (ROUTEBANDIT_EMBEDDER_OPENAI__BASE_URL,"
                            " ..._MODEL)")
    api_key = None
    try:
        if egress is not None:
            egress.check_url(opts.base_url, resolve=True)
            if opts.api_key_env:
                api_key = egress.key(opts.api_key_env, os.environ)
        elif opts.api_key_env:
            api_key = os.environ.get(opts.api_key_env)
    except RouteBanditError as exc:  # serving.egress.EgressError
        raise EmbedderError(f"setting 'embedder_openai': {exc}") from exc
    client = None
    if egress is not None:
        from serving.upstream import new_client

        client = new_client(egress=egress, max_connections=64)
    return OpenAIEmbedder(base_url=opts.base_url, model=opts.model, api_key=api_key,
                          timeout_s=opts.timeout_s, client=client)


__all__ = ["EMBEDDERS", "EMPTY", "FALLBACKS", "HEAD_CHARS", "OFF", "OK", "TAIL_CHARS", "Embedded",
           "Embedder", "EmbedderError", "LocalEmbedder", "NoEmbedder", "OpenAIEmbedder",
           "bounded", "make_embedder"]
