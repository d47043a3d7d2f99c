"""How the clean teacher enters training: one part per signal, composed by a variant.

A **signal** is one way the frozen clean-audio teacher shapes the update (DESIGN.md "Teacher signals").
Each lives in its own module of this package with its own typed config section ``signals.<name>``
(``weight`` 0 = off) and declares, through the ``Signal`` contract below:

* ``passes()``      the teacher passes it reads (``Passes``); the run makes their union, once;
* ``answer_scope``  the items whose greedy clean answer it reads (None = all);
* ``targets``       per-item accuracy targets, for a signal that replaces the labels;
* ``score``         a per-candidate teacher score ``[N]``: summed over signals into the bonus;
* ``token_credit``  a per-token advantage term ``[N, T]``;
* ``loss``          an extra loss term for the update (its weight applied);
* ``metrics``       what it logs.

The trainer asks the ``SignalSet`` (the active signals of a run) what to compute and sums what they
return; it never reads a teacher setting itself. How the summed score enters the advantages (joint
z-score as in the paper, or normalised apart with an SNR-shaped weight) is the ``teacher`` section's
business, applied here in ``SignalSet.advantages``.

Adding a signal: a new module here with a ``@register``-ed ``Signal`` subclass and its ``Config``
dataclass; every module of the package is imported (by name order) when the package is. Outside the
package, register before ``load_config``. Its config section and its place in ``echodistill config
show`` come from the registry; a variant that uses it is one row of ``config.VARIANTS``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import torch

from .. import grpo, rewards as R

__all__ = ["Passes", "Signal", "SignalSet", "REGISTRY", "register", "group_kinds", "build_signals"]


@dataclass(frozen=True)
class Passes:
    """Teacher passes a signal reads; a run makes the union of its signals' passes, each once."""

    scores: bool = False  # lT [N, T]: the teacher's log-prob of every sampled token on the clean clip
    argmax: bool = False  # + whether each sampled token is the teacher's argmax (needs its logits)
    silent: bool = False  # l0 [N, T]: the same teacher on silent audio (text prior)
    answer: bool = False  # its greedy answer on each clean clip [B] (+ its confidence)
    answer_logits: bool = False  # + its logits on that answer [B, T', V] (distillation)

    def __or__(self, other: "Passes") -> "Passes":
        return Passes(**{f.name: getattr(self, f.name) or getattr(other, f.name) for f in dataclasses.fields(self)})

    @property
    def clean(self) -> bool:
        """Whether anything runs the teacher on the clean clip."""
        return self.scores or self.answer


def group_kinds(acc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(all_equal [B], all_wrong [B]) from accuracy rewards [B, G] (1 = right)."""
    top, bottom = acc.max(1).values, acc.min(1).values
    return top == bottom, top < 1


class Signal:
    """One way the teacher enters training. Subclasses set ``name``, ``Config`` and the hooks they use.

    ``cfg`` is the signal's own section (``signals.<name>``, with ``weight``); ``teacher`` the shared
    ``teacher`` section (e.g. ``min_confidence``). Hooks get the micro-batch's ``Rollout`` ``r`` (N = B*G
    rows, item-major) and the run's ``num_generations`` G. A hook a signal does not use returns None.
    """

    name: ClassVar[str]
    Config: ClassVar[type]  # a dataclass with at least ``weight: float = 0.0``
    needs_samples: ClassVar[bool] = False  # reads the sampled completions (a policy-gradient term)
    reads_groups: ClassVar[bool] = False  # reads the accuracy groups (labels, when no signal replaces them)
    reads_labels: ClassVar[bool] = False  # reads the items' labels themselves (a supervised term)
    choices: ClassVar[dict[str, tuple]] = {}  # config field -> allowed values (checked by ``load_config``)

    def __init__(self, cfg: Any, teacher: Any):
        self.cfg, self.teacher, self.weight = cfg, teacher, float(cfg.weight)

    def passes(self) -> Passes:
        return Passes()

    def answer_scope(self, acc_groups) -> Optional[torch.Tensor]:
        """[B] bool: items whose teacher answer this signal reads; None = all. ``acc_groups()`` gives
        (all_equal [B], all_wrong [B]) of the label accuracy (computed on demand)."""
        return None

    def targets(self, r) -> Optional[list]:
        """[B] accuracy targets (choice index, or None = no signal for that item), replacing the labels."""
        return None

    def score(self, r) -> Optional[torch.Tensor]:
        """[N] this signal's weighted share of the teacher score (the bonus); log its raw value in
        ``r.rewards[self.name]``."""
        return None

    def token_credit(self, r) -> Optional[torch.Tensor]:
        """[N, T] per-token advantage term, added to the sequence advantages (0 on padding)."""
        return None

    def select(self, r, G: int) -> None:
        """After the rewards: decide what the loss will use (e.g. the rows to distill); store it on ``r``."""

    def loss(self, model, r, max_completion_length: int) -> Optional[tuple[torch.Tensor, dict]]:
        """(weighted loss term with grad, stats) for one micro-batch."""
        return None


REGISTRY: dict[str, type[Signal]] = {}


def register(cls: type[Signal]) -> type[Signal]:
    """Class decorator: make a signal known to configs, variants and the trainer by its ``name``."""
    if not dataclasses.is_dataclass(cls.Config) or "weight" not in {f.name for f in dataclasses.fields(cls.Config)}:
        raise TypeError(f"signal {cls.__name__}: Config must be a dataclass with a `weight` field")
    REGISTRY[cls.name] = cls
    return cls


def signals_schema() -> type:
    """The ``signals`` config section: one field per registered signal, typed by its ``Config``."""
    return dataclasses.make_dataclass(
        "SignalsConfig", [(n, c.Config, dataclasses.field(default_factory=c.Config)) for n, c in REGISTRY.items()])


def build_signals(cfg: Any) -> "SignalSet":
    """The active signals of a config (weight != 0), in registry order."""
    active = [cls(cfg.signals[name], cfg.teacher) for name, cls in REGISTRY.items() if cfg.signals[name].weight != 0]
    return SignalSet(active, cfg.teacher, cfg.train)


class SignalSet:
    """The active signals of a run: the one object the trainer asks about the teacher."""

    def __init__(self, signals: list[Signal], teacher: Any, train: Any):
        self.signals, self.teacher, self.G = signals, teacher, int(train.num_generations)
        self.names = [s.name for s in signals]
        target_sources = [s for s in signals if type(s).targets is not Signal.targets]
        if len(target_sources) > 1:
            from ...errors import ConfigError
            raise ConfigError(f"signals {[s.name for s in target_sources]} both replace the labels: keep one")
        self.target_source: Optional[Signal] = target_sources[0] if target_sources else None
        weights = dict(train.reward_weights)
        self.accuracy_weight = float(weights.get("accuracy", 0.0))
        task_rewards = any(float(v) != 0 for v in weights.values()) or bool(train.reward_funcs)
        # No reward can differ between samples and no KL on them: sampling would train nothing.
        self.samples = task_rewards or float(train.beta) > 0 or any(s.needs_samples for s in signals)
        self.passes = Passes(answer=teacher.gate == "confidence")
        for s in signals:
            self.passes = self.passes | s.passes()

    def __contains__(self, name: str) -> bool:
        return name in self.names

    @property
    def needs_labels(self) -> bool:
        """Whether a run reads the manifest's targets: a signal supervised by them (``supervised``), an
        accuracy reward against them, or a signal (or the ``equal_groups`` gate) that reads the groups of
        their accuracy. A signal replacing them as accuracy targets reads none."""
        if any(s.reads_labels for s in self.signals):
            return True
        if self.target_source is not None:
            return False
        return (self.accuracy_weight != 0 or any(s.reads_groups for s in self.signals)
                or (self.teacher.gate == "equal_groups" and self.teacher_score_signals))

    @property
    def teacher_score_signals(self) -> bool:
        return any(type(s).score is not Signal.score for s in self.signals)

    # ---- before the teacher runs
    def answer_scope(self, label_groups) -> Optional[list[int]]:
        """Items whose greedy clean answer any signal reads; None = all. ``label_groups()`` ->
        (all_equal [B], all_wrong [B]) against the label targets (only called when a scope needs it)."""
        if self.teacher.gate == "confidence" or (self.target_source and self.target_source.passes().answer):
            return None  # the gate weighs every item by its answer; pseudo-labels are every item's target
        scopes = [s.answer_scope(label_groups) for s in self.signals if s.passes().answer]
        if not scopes or any(sc is None for sc in scopes):
            return None
        return torch.stack(scopes).any(0).nonzero().flatten().tolist()

    # ---- rewards and advantages
    def targets(self, r) -> Optional[list]:
        return None if self.target_source is None else self.target_source.targets(r)

    def teacher_score(self, r) -> Optional[torch.Tensor]:
        """[N] the bonus: the sum of the signals' weighted scores (None: no signal scores)."""
        scores = [x for x in (s.score(r) for s in self.signals) if x is not None]
        return sum(scores[1:], scores[0]) if scores else None

    def snr_weight(self, snrs: list[float]) -> torch.Tensor:
        """[N] the bonus weight w(snr) per completion (``teacher.w0``, shaped over the training band)."""
        tc = self.teacher
        w = R.snr_weight(snrs, tc.w0, tc.snr_lo, tc.snr_hi, tc.w_min, tc.shaping, tc.shaping_direction)
        return R.expand_per_item(w, self.G)

    def _gate(self, r) -> torch.Tensor:
        """[B] multiplier of the decoupled teacher term (``teacher.gate``)."""
        if self.teacher.gate == "equal_groups":  # only where GRPO has no signal
            return group_kinds(r.rewards["accuracy"].view(-1, self.G))[0].float()
        if self.teacher.gate == "confidence":
            return r.teacher_answer.confidence.float().cpu()
        return torch.ones(len(r.examples))

    def advantages(self, r, scale_rewards: str) -> None:
        """``r.advantages`` [N] ([N, T] with per-token credit) from the task rewards and the teacher score,
        then each signal's ``select`` (e.g. the rows to distill).

        ``teacher.advantage=joint`` (paper): one group z-score of ``total`` = task + w(snr) * score; the
        teacher part logged is its difference to the task-only advantages. ``decoupled``:
        ``grpo.decoupled_advantages`` with the per-item weight ``w(snr) * gate``.
        """
        G, tc = self.G, self.teacher
        task = r.rewards["task"].view(-1, G)
        a_task = grpo.group_advantages(task, scale_rewards)
        a_teacher = torch.zeros_like(a_task)
        if "teacher" in r.rewards:
            if tc.advantage == "joint":
                a_teacher = grpo.group_advantages(r.rewards["total"].view(-1, G), scale_rewards) - a_task
            else:
                weight = r.rewards["snr_weight"].view(-1, G)[:, 0] * self._gate(r)
                a_task, a_teacher = grpo.decoupled_advantages(task, r.rewards["teacher"].view(-1, G), weight,
                                                              scale_rewards, tc.scale)
        r.adv_task, r.adv_teacher = a_task.reshape(-1), a_teacher.reshape(-1)
        adv = r.adv_task + r.adv_teacher
        credits = [c for c in (s.token_credit(r) for s in self.signals) if c is not None]
        if credits:
            adv = grpo.add_token_credit(adv, sum(credits[1:], credits[0]), r.mask)
        r.advantages = adv
        self.select(r)

    def select(self, r) -> None:
        """Each signal's ``select``: what its loss will use (e.g. the rows to distill)."""
        for s in self.signals:
            s.select(r, self.G)

    def losses(self, model, r, max_completion_length: int) -> tuple[dict[str, torch.Tensor], dict]:
        terms, stats = {}, {}
        for s in self.signals:
            out = s.loss(model, r, max_completion_length)
            if out is not None:
                terms[s.name], more = out
                stats.update(more)
        return terms, stats

    def describe(self) -> str:
        return ", ".join(f"{s.name} x{s.weight:g}" for s in self.signals) or "no teacher signal"


def _import_signal_modules() -> None:
    """Every module of this package registers its signal on import: a new signal is one new file.
    Imported by module name (a module's own imports first: ``clean_retention`` imports ``distill``), so
    the registry order, in which the terms are summed and logged, is fixed."""
    import importlib
    import pkgutil

    for m in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        importlib.import_module(f"{__name__}.{m}")


_import_signal_modules()
