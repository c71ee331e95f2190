"""Exactly-once learning bookkeeping.

Every accepted feedback becomes exactly one ``policy.learn`` step. The policy lives in
memory; a checkpoint saves ``policy.to_bytes()`` together with the list of feedback it
has learned since the previous checkpoint, in one transaction. After a restart the
learner loads the newest checkpoint and learns, in feedback order, exactly the feedback
no checkpoint has learned (the feedback rows without a ``learn_log`` row): what the lost
in-memory policy had learned after its last checkpoint is learned again by the restored
one, once, and nothing is learned twice by the same lineage.

The learner is synchronous and thread-safe; the service runs it off the request path.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from bandit.drift import ChangeEvent
from bandit.errors import PolicyError
from bandit.policy import Policy
from feedback.records import POLICY, Checkpoint, LearnItem
from feedback.store import Store

log = logging.getLogger(__name__)


class Learner:
    """Owns the live policy's learning and its checkpoints.

    >>> from bandit import Catalog
    >>> store = Store("sqlite://")
    >>> learner = Learner(store)
    >>> policy = learner.resume(lambda: Policy(Catalog.from_dict({"models": [{"name": "a"}]})))
    >>> learner.pending, policy.n_learned
    (0, 0)
    """

    def __init__(
        self,
        store: Store,
        *,
        checkpoint_every: int = 1000,
        checkpoint_interval_s: float = 30.0,
        keep: int = 3,
        learn_forced: bool = True,
    ) -> None:
        self.store = store
        self.checkpoint_every = checkpoint_every
        self.checkpoint_interval_s = checkpoint_interval_s
        self.keep = keep
        self.learn_forced = learn_forced
        self._policy: Policy | None = None
        self._lock = threading.Lock()
        # Learned in memory since the last checkpoint: (feedback seq, error or None).
        self._pending: list[tuple[int, str | None]] = []
        self._pending_seqs: set[int] = set()
        # Corrections learned since the last checkpoint (feedback/grades.py): (id, error).
        self._corrections: list[tuple[int, str | None]] = []
        self._correction_ids: set[int] = set()
        self._last_checkpoint = time.monotonic()
        self.last_checkpoint: Checkpoint | None = None
        self.n_learned = 0
        self.n_failed = 0
        # callable(kind) for each record set aside (the service counts them)
        self.on_dead_letter: Callable[[str], None] | None = None
        # callable(event) for each change of a model the policy goes through
        # (bandit.drift): the service counts them; each is logged here, and the next
        # checkpoint is made at once, named after it.
        self.on_change: Callable[[ChangeEvent], None] | None = None
        self._change_seq = 0
        self._change_reason: str | None = None

    @property
    def policy(self) -> Policy:
        if self._policy is None:
            raise PolicyError("the learner has not resumed a policy yet")
        return self._policy

    @property
    def pending(self) -> int:
        """Feedback learned in memory but not yet in a checkpoint."""
        return len(self._pending)

    def _load(self, make_policy: Callable[[], Policy]) -> tuple[Policy, Checkpoint | None]:
        """Take the newest checkpoint's policy (else ``make_policy()``), nothing pending."""
        cp = self.store.latest_checkpoint()
        policy = Policy.from_bytes(cp.blob) if cp is not None and cp.blob else make_policy()
        with self._lock:
            self._policy = policy
            self.last_checkpoint = cp
            self._pending.clear()
            self._pending_seqs.clear()
            self._corrections.clear()
            self._correction_ids.clear()
        self._change_seq = policy.change_seq
        return policy, cp

    def resume(self, make_policy: Callable[[], Policy]) -> Policy:
        """Load the newest checkpoint (else ``make_policy()``) and learn what it lacks."""
        policy, _ = self._load(make_policy)
        caught_up = self.learn_many(self.store.unlearned())
        # A correction follows its grade's step only where that step is in this lineage:
        # a feedback just relearned has the person's score already (it replaced the grade).
        relearned = set(self._pending_seqs)
        corrections = []
        for item in self.store.unlearned_corrections():
            if item.seq in relearned:
                assert item.correction_id is not None
                with self._lock:
                    self._corrections.append((item.correction_id,
                                              "skipped: its feedback was relearned whole"))
                    self._correction_ids.add(item.correction_id)
            else:
                corrections.append(item)
        caught_up += self.learn_many(corrections)
        if caught_up:
            log.info("learned %d feedback the last checkpoint had not", caught_up)
            self.checkpoint("resume")
        return policy

    def learn_many(self, items: Iterable[LearnItem]) -> int:
        """Learn each item not yet learned; returns how many were new."""
        n = 0
        for item in items:
            with self._lock:
                if item.correction_id is not None:
                    if item.correction_id in self._correction_ids:
                        continue
                    error = self._learn_one(_corrected(item))
                    self._corrections.append((item.correction_id, error))
                    self._correction_ids.add(item.correction_id)
                    n += 1
                    continue
                if item.seq in self._pending_seqs:
                    continue
                error = self._learn_one(item)
                self._pending.append((item.seq, error))
                self._pending_seqs.add(item.seq)
            n += 1
        return n

    def _learn_one(self, item: LearnItem) -> str | None:
        if item.kind != POLICY and not self.learn_forced:
            return f"skipped: {item.kind} decision"
        try:
            self.policy.learn(item.decision, item.reward, outcome=item.outcome,
                              revisit=item.revisit)
        except Exception as exc:
            # Whatever a record holds, it costs its own step, never the learner: recorded
            # in learn_log.error (so the step is never retried), set aside and counted.
            self.n_failed += 1
            error = f"{type(exc).__name__}: {exc}"
            level = logging.WARNING if isinstance(exc, PolicyError) else logging.ERROR
            log.log(level, "feedback %d could not be learned: %s", item.seq, error,
                    exc_info=not isinstance(exc, PolicyError))
            self._set_aside(item, error)
            return error[:500]
        self.n_learned += 1
        self._report_changes()
        return None

    def report_changes(self) -> list[ChangeEvent]:
        """Log and hand on the policy's change events not reported yet (after an
        operator's :meth:`bandit.policy.Policy.reset_model`, say)."""
        with self._lock:
            return self._report_changes()

    def _report_changes(self) -> list[ChangeEvent]:
        policy = self.policy
        if policy.change_seq == self._change_seq:
            return []
        events = [e for e in policy.changes if e.seq > self._change_seq]
        self._change_seq = policy.change_seq
        for event in events:
            if event.source == "detected":
                log.warning("model %s changed: its grades went %s (detected after %d "
                            "steps); what was learned of its quality is forgotten and "
                            "learned again", event.model, event.direction, event.at)
            else:
                log.warning("model %s declared changed by an operator (after %d steps); "
                            "what was learned of it is forgotten and learned again",
                            event.model, event.at)
            # checkpoints.reason holds 32 characters
            self._change_reason = f"change: {event.model}"[:32]
            if self.on_change is not None:
                self.on_change(event)
        return events

    def skip(self, seq: int, error: str) -> None:
        """Record feedback ``seq`` as a step that failed (``learn_log.error``), never to be
        retried: for feedback whose decision cannot even be loaded."""
        with self._lock:
            if seq in self._pending_seqs:
                return
            self._pending.append((seq, f"skipped: {error}"[:500]))
            self._pending_seqs.add(seq)
            self.n_failed += 1
        if self.on_dead_letter is not None:
            self.on_dead_letter("feedback")

    def _set_aside(self, item: LearnItem, error: str) -> None:
        if self.on_dead_letter is not None:
            self.on_dead_letter("feedback")
        try:
            self.store.dead_letter(
                worker="learner", kind="feedback", ref=None,
                error=error, record={"feedback_seq": item.seq, "reward": item.reward,
                                     "kind": item.kind, "model": item.decision.model})
        except Exception as exc:  # learn_log.error still records it
            log.error("could not set aside feedback %d: %s", item.seq, exc)

    def due(self) -> bool:
        """Whether enough was learned, or long enough ago, to checkpoint now."""
        if self._change_reason is not None:
            return True  # a change of a model is checkpointed at once
        if not self._pending and not self._corrections:
            return False
        return (
            len(self._pending) + len(self._corrections) >= self.checkpoint_every
            or time.monotonic() - self._last_checkpoint >= self.checkpoint_interval_s
        )

    def checkpoint(self, reason: str = "periodic") -> Checkpoint:
        """Save the policy with the feedback learned since the last checkpoint."""
        with self._lock:
            policy = self.policy
            if self._change_reason is not None and reason == "periodic":
                reason = self._change_reason  # the checkpoint the change asked for
            self._change_reason = None
            cp = self.store.save_checkpoint(
                blob=policy.to_bytes(),
                policy_version=policy.version,
                n_learned=policy.n_learned,
                learned=list(self._pending),
                reason=reason,
                keep=self.keep,
                corrected=list(self._corrections),
            )
            self._pending.clear()
            self._pending_seqs.clear()
            self._corrections.clear()
            self._correction_ids.clear()
            self._last_checkpoint = time.monotonic()
            self.last_checkpoint = cp
        return cp

    def swap(self, policy: Policy) -> Checkpoint:
        """Replace the live policy and checkpoint it at once.

        Feedback the old policy learned since its last checkpoint counts as learned:
        the new policy replaces that lineage rather than relearning it.
        """
        with self._lock:
            self._policy = policy
            self._change_seq = policy.change_seq
        return self.checkpoint("swap")


def _corrected(item: LearnItem) -> LearnItem:
    """The correction step of ``item`` (a person's score that replaced a learned grade).

    VW regresses each model's quality: two steps on the same decision, the grade's ``g``
    and then ``2p - g``, leave it where one step of the person's ``p`` would (their mean
    is ``p``). The reward is corrected the same way; the step is a revisit, so the
    prompt's kind does not count the decision twice.
    """
    assert item.reward_before is not None
    outcome = dict(item.outcome)
    person = outcome.get("quality")
    if person is not None and item.score_before is not None:
        outcome["quality"] = 2.0 * person - item.score_before
    return LearnItem(seq=item.seq, decision=item.decision,
                     reward=2.0 * item.reward - item.reward_before, outcome=outcome,
                     kind=item.kind, revisit=True)
