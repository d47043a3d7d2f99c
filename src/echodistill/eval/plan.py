"""The plan of a pre-registered experiment (round 4, issue 27): the units a spec asks for, whether each
can run in this checkout, what the store holds against that plan, and the tuning choice.

A round-4 spec (``configs/experiments/round4*.yaml``) crosses its methods with response ``formats``,
warm-up seeds (``warmup_seeds``, a level of the design) and training seeds nested in them (``seeds``);
a method with a ``grid`` (the tuning spec) is crossed with every point of it, one with ``chosen`` (the
test spec) runs the point ``scripts/experiment.py choose`` wrote for it. A unit is named
``<method>-<format>[-<point>]-w<warm-up seed>-s<seed>``; its warm-up ``warmup-<key>-<format>-w<seed>``.

Pure bookkeeping: no training here (``scripts/experiment.py`` runs the units).
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from ..errors import UserError

# Short names for grid keys in unit names (the full key=value pairs are in the unit's run.json)
ABBREV = {"learning_rate": "lr", "beta": "beta"}
TIE = 0.0005  # tuning: means within 0.05 points are a tie (docs/preregistration-round4.md, section 4)


def is_nested_spec(spec: Mapping) -> bool:
    """A round-4 spec (formats x warm-up seeds x nested seeds) rather than a round-3 one."""
    return "formats" in spec


def point_label(point: Mapping[str, Any]) -> str:
    """``{"train.beta": 0, "train.learning_rate": 3e-5}`` -> ``beta0-lr3e-05``."""
    return "-".join(f"{ABBREV.get(k.rsplit('.', 1)[-1], k.rsplit('.', 1)[-1])}{v:g}" if isinstance(v, float)
                    else f"{ABBREV.get(k.rsplit('.', 1)[-1], k.rsplit('.', 1)[-1])}{v}" for k, v in point.items())


def grid_points(grid: Mapping[str, Sequence]) -> list[dict]:
    """Every point of a grid ``{key: [values]}``, in the order the keys and values are written."""
    keys = list(grid)
    return [dict(zip(keys, vals)) for vals in itertools.product(*(grid[k] for k in keys))]


@dataclass(frozen=True)
class WarmupUnit:
    key: str  # the spec's warm-up key (regime): full, frac30
    fmt: str
    seed: int

    @property
    def name(self) -> str:
        return f"warmup-{self.key}-{self.fmt}-w{self.seed}"


@dataclass(frozen=True)
class Unit:
    method: str
    fmt: str
    warmup: WarmupUnit
    seed: int
    point: tuple = ()  # ((key, value), ...): the tuning point (the chosen one in the test spec)
    blocked: str = ""  # why it cannot run in this checkout ("" = runnable)

    @property
    def point_dict(self) -> dict:
        return dict(self.point)

    @property
    def label(self) -> str:
        return point_label(self.point_dict)

    @property
    def group(self) -> str:
        """What the store groups by: the method at one point in one format (``grpo-answer-lr1e-04-beta0``)."""
        return "-".join(x for x in (self.method, self.fmt, self.label) if x)

    @property
    def name(self) -> str:
        return f"{self.group}-w{self.warmup.seed}-s{self.seed}"

    def overrides(self) -> list[str]:
        return [f"{k}={v}" for k, v in self.point]


def read_chosen(path: Optional[str | Path]) -> dict:
    """``round4_chosen.yaml`` as {format: {method: {key: value}}} ({} when it does not exist yet)."""
    from omegaconf import OmegaConf

    if not path or not Path(path).is_file():
        return {}
    data = OmegaConf.to_container(OmegaConf.load(path), resolve=True) or {}
    return {fmt: {m: dict(c.get("point") or {}) for m, c in (methods or {}).items()}
            for fmt, methods in (data.get("chosen") or {}).items()}


def unit_overrides(spec: Mapping, unit: Unit) -> list[str]:
    """Every override of a unit's training command, in the order they apply (the later wins)."""
    m = spec["methods"][unit.method]
    kind = m.get("kind", "train")
    common = [*spec.get("common", []), *spec["formats"][unit.fmt]]
    return [*common, *(spec.get("sft", []) if kind == "sft" else spec.get("train", [])), *m.get("train", []),
            *unit.overrides()]


def frozen_commit(spec: Mapping, fmt: str) -> str:
    """The commit a format's test units must be made from ('' when none is set).

    ``frozen_commit`` is one commit for every format, or ``{format: commit}``: each format's choice is
    committed once its own tuning is complete (pre-registration section 10), so the answer half can run
    while the reasoning half is still being tuned."""
    frozen = spec.get("frozen_commit") or ""
    commit = str((frozen.get(fmt) or "") if isinstance(frozen, Mapping) else frozen)
    # a commit hash or nothing: the value reaches git's command line (the report's diff), never as an option
    if commit and not re.fullmatch(r"[0-9a-fA-F]{7,40}", commit):
        raise UserError(f"frozen_commit ({fmt}): {commit!r} is not a commit hash (7 to 40 hex digits): set it to "
                        "the commit that holds the format's tuning choice (git log --oneline)")
    return commit


def check_config(overrides: Sequence[str]) -> str:
    """'' when the overrides make a valid config in this checkout, else the one-line reason."""
    from ..config import load_config

    try:
        load_config(None, list(overrides))
    except UserError as e:  # ConfigError, and a plug-in or reward key the config names
        return str(e).splitlines()[0]
    return ""


def plan_units(spec: Mapping, chosen: Optional[Mapping] = None, validate: bool = True) -> list[Unit]:
    """The spec's training units, each marked ``blocked`` with the reason when it cannot run here.

    Blocked: the method is ``pending`` (no knob for it exists yet: the text says what is missing), the
    test spec has no chosen point for it yet, or its overrides are not a valid config in this checkout
    (e.g. ``data.response_format`` before issue 22 lands): then the config error is the reason, followed
    by the method's ``needs`` text when it has one.
    """
    if not is_nested_spec(spec):
        raise UserError("not a round-4 spec (no `formats:` section): use `run` / `report` as for rounds 2-3")
    chosen = read_chosen(spec.get("chosen")) if chosen is None else chosen
    grids = spec.get("grids") or {}
    valid: dict[tuple, str] = {}  # one load_config per distinct override list
    units = []
    for fmt in spec["formats"]:
        for method, m in spec["methods"].items():
            if m.get("grid") and "chosen" in spec:
                raise UserError(f"method {method}: `grid` and the spec's `chosen` exclude each other")
            block = ""
            if m.get("pending"):
                block = f"pending: {m['pending']}"
            if m.get("grid"):
                if m["grid"] not in grids:
                    raise UserError(f"method {method}: grid {m['grid']!r} is not in the spec's grids "
                                    f"({', '.join(grids) or 'none'})")
                points = grid_points(grids[m["grid"]])
            elif "chosen" in spec:
                c = chosen.get(fmt, {}).get(method)
                points = [c if c is not None else {}]
                if c is None and not block:
                    block = f"not tuned yet: no choice for {method} ({fmt}) in {spec['chosen']} " \
                            "(run `scripts/experiment.py choose` on the tuning spec)"
            else:
                points = [{}]
            for point, ws, seed in itertools.product(points, spec["warmup_seeds"], spec["seeds"]):
                # point keys sorted: a unit's name does not depend on how a file orders them
                unit = Unit(method, fmt, WarmupUnit(m["warmup"], fmt, int(ws)), int(seed), tuple(sorted(point.items())))
                reason = block
                if not reason and validate:
                    ov = tuple(unit_overrides(spec, unit))
                    if ov not in valid:
                        valid[ov] = check_config(ov)
                    reason = valid[ov] and valid[ov] + (f" -- needs {m['needs']}" if m.get("needs") else "")
                units.append(Unit(**{**unit.__dict__, "blocked": reason}))
    return units


def warmup_units(spec: Mapping, units: Sequence[Unit]) -> list[WarmupUnit]:
    return list(dict.fromkeys(u.warmup for u in units))


# ------------------------------------------------------------------ the store against the plan
@dataclass
class PlanCheck:
    planned: int
    stored: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # runnable, not stored yet
    blocked: dict[str, list[str]] = field(default_factory=dict)  # reason -> units
    extra: list[str] = field(default_factory=list)  # in the store, not in the plan
    off_commit: list[str] = field(default_factory=list)  # stored from another code version than the frozen one
    mismatched: list[str] = field(default_factory=list)  # stored under a planned name with other settings
    other_build: list[str] = field(default_factory=list)  # started from another build of its warm-up (sha256)
    # (format, method or warm-up) -> {"stored": n, "missing": n, "blocked": n}; warm-ups first in each format
    groups: dict[tuple[str, str], Counter] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [f"Plan: {self.planned} units (training units and warm-up evaluations); stored "
               f"{len(self.stored)}, missing {len(self.missing)}, blocked "
               f"{sum(len(v) for v in self.blocked.values())}, extra {len(self.extra)}."]
        if self.groups:  # one row per method and format: readable where 300 unit names are not
            out += ["", "| format | method | stored | missing | blocked |", "|---|---|---|---|---|"]
            out += [f"| {fmt} | {method} | {g['stored']} | {g['missing']} | {g['blocked']} |"
                    for (fmt, method), g in self.groups.items()]
            out.append("")
        if self.missing:
            out.append(f"* missing ({len(self.missing)}): " + _few(self.missing))
        for reason, names in self.blocked.items():
            out.append(f"* blocked ({len(names)}): {reason}")
        if self.extra:
            out.append(f"* **extra, not in the plan** ({len(self.extra)}): " + ", ".join(self.extra))
        if self.off_commit:
            out.append(f"* **not from the frozen commit** ({len(self.off_commit)}): " + ", ".join(self.off_commit))
        if self.mismatched:
            out.append(f"* **stored with other settings than planned** ({len(self.mismatched)}): "
                       + ", ".join(self.mismatched))
        if self.other_build:
            out.append(f"* **started from another build of their warm-up than the others** ({len(self.other_build)}; "
                       "they pair and compare with none of them: rerun them on a machine that rebuilds the others' "
                       "warm-up): " + ", ".join(self.other_build))
        return out

    @property
    def complete(self) -> bool:
        return not (self.missing or self.blocked or self.other_build)


def _few(names: Sequence[str], k: int = 6) -> str:
    return ", ".join(names[:k]) + (f", ... ({len(names) - k} more)" if len(names) > k else "")


def check_store(spec: Mapping, units: Sequence[Unit], store_meta: Mapping[str, dict]) -> PlanCheck:
    """Compare the planned units (and their warm-ups' evaluations) with the store's run.json files
    (``store_meta``: run name -> meta). A stored unit whose method, format, seeds or point differ from
    its planned name's is listed as mismatched; where its format has a ``frozen_commit``, one whose code
    version is not a clean checkout of it as off-commit."""
    warmups = warmup_units(spec, units)
    planned: dict[str, Optional[Unit]] = {u.name: u for u in units}
    planned.update({w.name: None for w in warmups})
    check = PlanCheck(planned=len(planned))
    runnable_warmups = {u.warmup.name for u in units if not u.blocked}
    group_of = {x.name: (x.fmt, f"warmup-{x.key}") for x in warmups} | {u.name: (u.fmt, u.method) for u in units}
    fmt_order = {f: i for i, f in enumerate(dict.fromkeys(x.fmt for x in (*units, *warmups)))}
    for x in sorted([*warmups, *units], key=lambda x: fmt_order[x.fmt]):  # stable: warm-ups lead their format
        check.groups.setdefault(group_of[x.name], Counter())
    for name, u in planned.items():
        meta = store_meta.get(name)
        blocked = u.blocked if u is not None else "" if name in runnable_warmups else "its methods are all blocked"
        if meta is not None:
            status = "stored"
            check.stored.append(name)
            if u is not None and _settings(meta) != _settings_of(u):
                check.mismatched.append(name)
        elif blocked:
            status = "blocked"
            check.blocked.setdefault(blocked, []).append(name)
        else:
            status = "missing"
            check.missing.append(name)
        check.groups[group_of[name]][status] += 1
    check.extra = sorted(n for n in store_meta if n not in planned)
    check.other_build = _other_builds(planned, check.stored, store_meta)
    commit_of = {x.name: frozen_commit(spec, x.fmt) for x in (*units, *warmups)}  # planned name -> its commit
    check.off_commit = sorted(n for n, m in store_meta.items()
                              if commit_of.get(n) and not made_from(str(m.get("code_version", "")), commit_of[n]))
    return check


def _other_builds(planned: Mapping[str, Optional[Unit]], stored: Sequence[str],
                  store_meta: Mapping[str, dict]) -> list[str]:
    """Stored units whose starting weights (``start_sha256``) differ from those of most units of the same
    warm-up: a warm-up rebuilt with other bits (another machine's kernels) is another starting point."""
    builds: dict[str, dict[str, list[str]]] = {}  # warm-up -> start sha256 -> stored units
    for name in stored:
        u = planned[name]
        warmup = u.warmup.name if u is not None else name
        builds.setdefault(warmup, {}).setdefault(str(store_meta[name].get("start_sha256")), []).append(name)
    out: list[str] = []
    for by_sha in builds.values():
        most = max(by_sha.values(), key=len)
        out += [n for names in by_sha.values() if names is not most for n in names]
    return sorted(out)


def made_from(code_version: str, commit: str) -> bool:
    """Whether a ``git describe --always --dirty`` string (a run's code version) is a clean checkout of
    ``commit`` (any length of its hash, 7 hex digits at least)."""
    if not code_version or code_version.endswith("-dirty") or len(commit) < 7:
        return False
    described = code_version.rsplit("-g", 1)[-1]  # "v1.0-5-gabc1234" -> "abc1234"; a bare hash stays
    return described.startswith(commit) or commit.startswith(described)


def _settings(meta: Mapping) -> tuple:
    return (meta.get("method"), meta.get("format"), meta.get("warmup_seed"), meta.get("seed"),
            tuple(sorted((meta.get("point") or {}).items())))


def _settings_of(u: Unit) -> tuple:
    return (u.method, u.fmt, u.warmup.seed, u.seed, tuple(sorted(u.point)))


# ------------------------------------------------------------------ tuning: the choice from the store
def tuning_table(spec: Mapping, units: Sequence[Unit], runs_by_name: Mapping[str, Any], metric: str = "StrongGSR",
                 strong_snr_max: float = 0.0) -> dict:
    """Per (format, method): every grid point with its per-seed metric (from the stored runs) and mean.

    Returns {(fmt, method): [{"point": {...}, "label": str, "values": [per seed], "mean": float | None,
    "missing": [unit names]}]}. A run whose rows have no item with the metric counts as 0 (it failed to
    answer anything), as the pre-registration says.
    """
    from .seeds import item_scores

    table: dict[tuple, list] = defaultdict(list)
    by_point: dict[tuple, list[Unit]] = defaultdict(list)
    for u in units:
        by_point[(u.fmt, u.method, u.point)].append(u)
    for (fmt, method, point), us in by_point.items():
        values, missing = [], []
        for u in us:
            r = runs_by_name.get(u.name)
            if r is None:
                missing.append(u.name)
                continue
            s = item_scores(r.rows, metric, strong_snr_max)
            values.append(sum(s.values()) / len(s) if s else 0.0)
        mean = sum(values) / len(values) if values and not missing else None
        table[(fmt, method)].append({"point": dict(point), "label": point_label(dict(point)), "values": values,
                                     "mean": mean, "missing": missing})
    return dict(table)


def choose(points: Sequence[dict], lr_keys: Sequence[str] = ("learning_rate",)) -> Optional[dict]:
    """The pre-registered choice among one method's grid points: the highest mean; means within ``TIE``
    of the best go to the lower learning rate, then to beta 0. None while any point is incomplete."""
    if not points or any(p["mean"] is None for p in points):
        return None
    best = max(p["mean"] for p in points)
    tied = [p for p in points if p["mean"] >= best - TIE - 1e-12]

    def simpler(p: dict) -> tuple:
        lr = next((v for k, v in p["point"].items() if k.rsplit(".", 1)[-1] in lr_keys), math.inf)
        beta = next((v for k, v in p["point"].items() if k.rsplit(".", 1)[-1] == "beta"), 0)
        return (float(lr), float(beta) != 0.0)

    return min(tied, key=simpler)


def grid_edges(point: Mapping[str, Any], grids: Mapping[str, Mapping[str, Sequence]]) -> list[str]:
    """Where a chosen point sits at an end of its grid: one phrase per key of 3+ values whose chosen value
    is the grid's lowest or highest ("learning_rate 0.0003 (the grid's highest)"). The method's best may
    then lie beyond the pre-registered grid, which is not extended; the report says so. The grid is the
    one of ``grids`` (the spec's ``grids:``) with the point's keys (the families tune distinct keys)."""
    grid = next((g for g in grids.values() if set(g) == set(point)), {})
    out = []
    for key, value in point.items():
        values = sorted(float(v) for v in grid.get(key, ()))
        if len(values) >= 3 and float(value) in (values[0], values[-1]):
            end = "highest" if float(value) == values[-1] else "lowest"
            out.append(f"{key.rsplit('.', 1)[-1]} {float(value):g} (the grid's {end})")
    return out


__all__ = ["is_nested_spec", "point_label", "grid_points", "WarmupUnit", "Unit", "read_chosen", "unit_overrides",
           "check_config", "plan_units", "warmup_units", "PlanCheck", "check_store", "made_from", "tuning_table", "choose",
           "grid_edges"]
