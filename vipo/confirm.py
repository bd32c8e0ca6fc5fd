"""Pre-registered (confirmatory) claims of a study: the ``confirmatory:`` block, its frozen plan, and the check
that a confirmatory claim is judged only against the plan it was frozen with.

A study file may declare::

    confirmatory:
      pilot: toy                      # the pilot study; the seeds of this study must be disjoint from its seeds
      alpha: 0.05                     # family-wise error rate
      correction: holm                # holm | bonferroni | none
      margins: {eval/shape_acc: 0.05} # TOST equivalence margin per metric (every claim's metric needs one)
      levels: {redness: [0.1, 0.2, 0.3]}  # matching rule: FIXED reward levels per reward (no data-dependent rounding)
      claims:                         # the primary family
        - {claim: "...", ablation: confirm, cell: vipo, reference: grpo, metric: eval/shape_acc, reward: redness}

``python sweep.py study=<name> freeze`` writes ``<root>/plan.json`` (the block, the seeds, the world, the study
file's SHA-256, the commit) before any run of the study has finished; ``check_plan`` refuses a study whose file or
block no longer matches its plan (``analysis.confirm`` calls it before judging).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import subprocess
from pathlib import Path

from vipo.config import CONFIG_DIR, ConfigError

PLAN = "plan.json"
CORRECTIONS = ("holm", "bonferroni", "none")
BLOCK_KEYS = {"pilot", "alpha", "correction", "margins", "levels", "claims"}
CLAIM_KEYS = {"claim", "ablation", "cell", "reference", "metric", "reward"}


class PlanError(ConfigError):
    """A confirmatory claim cannot be judged: no frozen plan, or the study changed since it was frozen."""


def study_path(name: str | Path) -> Path:
    return Path(name) if str(name).endswith(".yaml") else CONFIG_DIR / "study" / f"{name}.yaml"


def seeds_of(value) -> list[int]:
    """A part's ``seeds``: a count N (seeds 0..N-1) or a list."""
    return list(range(value)) if isinstance(value, int) else [int(s) for s in value]


def study_seeds(spec: dict) -> set[int]:
    out: set[int] = set()
    for part in spec["parts"]:
        out |= set(seeds_of(part.get("seeds", [0])))
    return out


def planned_seeds(parts: list[dict], ablation: str, cell: str) -> set[int]:
    """Seeds the parts of ``ablation`` that run ``cell`` plan for it."""
    out: set[int] = set()
    for p in parts:
        if p["ablation"] == ablation and (not p.get("cells") or cell in p["cells"]):
            out |= set(seeds_of(p.get("seeds", [0])))
    return out


def check_block(spec: dict, path: Path, load_study=None) -> None:
    """Validate a study's ``confirmatory:`` block (a ConfigError naming the file, key and value); ``load_study``
    (name -> spec) reads the pilot, whose seeds must not be reused."""
    block = spec.get("confirmatory")
    if block is None:
        return
    where = f"config error: {path}: confirmatory"
    if not isinstance(block, dict):
        raise ConfigError(f"{where} must be a mapping, got {block!r}")
    bad = set(block) - BLOCK_KEYS
    if bad:
        raise ConfigError(f"{where}: unknown key(s) {sorted(bad)}; allowed: {sorted(BLOCK_KEYS)}")
    alpha = block.get("alpha", 0.05)
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise ConfigError(f"{where}.alpha must be in (0, 1), got {alpha!r}")
    if block.get("correction", "holm") not in CORRECTIONS:
        raise ConfigError(f"{where}.correction must be one of {CORRECTIONS}, got {block.get('correction')!r}")
    claims = block.get("claims") or []
    if not claims:
        raise ConfigError(f"{where}.claims: the primary family is empty")
    margins, levels = block.get("margins") or {}, block.get("levels") or {}
    parts = {p["ablation"]: p for p in spec["parts"]}
    for i, c in enumerate(claims):
        missing, extra = CLAIM_KEYS - set(c), set(c) - CLAIM_KEYS
        if missing or extra:
            raise ConfigError(f"{where}.claims[{i}]: needs keys {sorted(CLAIM_KEYS)}"
                              + (f", missing {sorted(missing)}" if missing else "")
                              + (f", unknown {sorted(extra)}" if extra else ""))
        if c["ablation"] not in parts:
            raise ConfigError(f"{where}.claims[{i}] ({c['claim']!r}): ablation {c['ablation']!r} is no part of the "
                              f"study; parts: {sorted(parts)}")
        rewards = {r for p in spec["parts"] if p["ablation"] == c["ablation"]
                   for r in (p.get("rewards") or list(spec["rewards"]))}
        if c["reward"] not in rewards:
            raise ConfigError(f"{where}.claims[{i}] ({c['claim']!r}): reward {c['reward']!r} is not run by part "
                              f"{c['ablation']}; its rewards: {sorted(rewards)}")
        if not planned_seeds(spec["parts"], c["ablation"], c["cell"]) & planned_seeds(spec["parts"], c["ablation"],
                                                                                       c["reference"]):
            raise ConfigError(f"{where}.claims[{i}] ({c['claim']!r}): cells {c['cell']!r} and {c['reference']!r} "
                              f"share no planned seed in the parts of {c['ablation']}")
        m = margins.get(c["metric"])
        if not (isinstance(m, (int, float)) and m > 0):
            raise ConfigError(f"{where}.margins[{c['metric']!r}] must be a number > 0 (claim {c['claim']!r}), "
                              f"got {m!r}")
        lv = levels.get(c["reward"])
        if not (isinstance(lv, list) and lv and all(isinstance(x, (int, float)) and math.isfinite(x) for x in lv)):
            raise ConfigError(f"{where}.levels[{c['reward']!r}] must be a list of fixed numbers (claim "
                              f"{c['claim']!r}), got {lv!r}")
    pilot = block.get("pilot")
    if pilot is not None and load_study is not None:
        shared = sorted(study_seeds(spec) & study_seeds(load_study(pilot)))
        if shared:
            raise ConfigError(f"{where}: seeds {shared} are also seeds of the pilot study {pilot!r}; "
                              f"confirmatory seeds must be new")


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _git(*args: str) -> str | None:
    from vipo.sweep import ROOT

    try:
        out = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _commit_of(path: Path) -> tuple[str | None, bool]:
    """(HEAD commit, whether ``path`` is tracked and unchanged from HEAD)."""
    from vipo.sweep import ROOT

    head = _git("rev-parse", "HEAD")
    try:
        rel = path.resolve().relative_to(ROOT.resolve())
    except ValueError:
        return head, False
    at_head = _git("rev-parse", f"HEAD:{rel.as_posix()}")  # blob id of the committed file
    return head, at_head is not None and at_head == _git("hash-object", str(path))


def plan_of(spec: dict, path: Path) -> dict:
    """What a frozen plan records (without the time and the commit)."""
    from vipo.sweep import ROOT

    where = path.resolve().relative_to(ROOT.resolve()).as_posix() if _inside_repo(path) else str(path)
    return {"study": spec["name"], "study_file": where, "study_sha256": sha256(path),
            "confirmatory": spec["confirmatory"], "world": spec.get("world") or [], "rewards": spec["rewards"],
            "parts": [{**p, "seeds": seeds_of(p.get("seeds", [0]))} for p in spec["parts"]]}


def freeze(spec: dict, path: Path, root: Path, index: list[dict], require_commit: bool = True) -> Path:
    """Write ``<root>/plan.json`` for the study ``spec`` (read from ``path``; ``index``: its entries, from
    ``vipo.study.plan_study``); refuses once a run has finished or when a different plan is already frozen. In the
    repository, the study file must be committed unchanged (``require_commit``), so the recorded commit holds
    exactly the file whose hash the plan carries. ``vipo.study.freeze_study`` is the entry point."""
    if not spec.get("confirmatory"):
        raise ConfigError(f"config error: {path} has no 'confirmatory:' block; nothing to freeze")
    plan_path = root / PLAN
    head, committed = _commit_of(path)
    if require_commit and head is not None and not committed and _inside_repo(path):
        raise PlanError(f"{path} has uncommitted changes (or is untracked): commit it, then freeze, so the plan's "
                        f"commit holds the file it was frozen from")
    plan = json.loads(json.dumps(plan_of(spec, path)))  # as JSON holds it
    if plan_path.exists():
        old = json.loads(plan_path.read_text())
        if {k: old.get(k) for k in plan} == plan:
            print(f"[freeze] {plan_path} already holds this plan (frozen {old.get('frozen_at')}, commit "
                  f"{old.get('commit')})", flush=True)
            return plan_path
        raise PlanError(f"{plan_path} already holds a different frozen plan; a changed plan is a new study "
                        f"(new name, new root)")
    done = sorted({e["run"] for e in index if (root / e["run"] / "summary.json").exists()})
    if done:
        raise PlanError(f"{root}: {len(done)} run(s) of study {spec['name']} already finished (e.g. {done[0]}); "
                        f"a plan is frozen before the first run")
    plan.update(commit=head, study_file_committed=committed,
                frozen_at=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    root.mkdir(parents=True, exist_ok=True)
    tmp = plan_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(plan, indent=1) + "\n")
    os.replace(tmp, plan_path)
    print(f"[freeze] {plan_path}: {len(spec['confirmatory']['claims'])} confirmatory claims, seeds "
          f"{sorted(study_seeds(spec))}, study sha256 {plan['study_sha256'][:12]}, commit {head}", flush=True)
    return plan_path


def _inside_repo(path: Path) -> bool:
    from vipo.sweep import ROOT

    return path.resolve().is_relative_to(ROOT.resolve())


def check_plan(spec: dict, path: Path, root: Path) -> dict:
    """The frozen plan of the confirmatory study ``spec`` (read from ``path``, results in ``root``), after checking
    that the study still matches it; a PlanError naming what changed otherwise."""
    plan_path = root / PLAN
    if not plan_path.exists():
        raise PlanError(f"{plan_path} not found: confirmatory claims are judged only against a frozen plan "
                        f"(python sweep.py study={spec['name']} freeze, before the first run)")
    plan = json.loads(plan_path.read_text())
    now = json.loads(json.dumps(plan_of(spec, path)))  # as JSON holds it
    if plan.get("study_sha256") != now["study_sha256"]:
        raise PlanError(f"{path} changed since its plan was frozen ({plan_path}: sha256 "
                        f"{str(plan.get('study_sha256'))[:12]}, now {now['study_sha256'][:12]}); a confirmatory "
                        f"claim is not judged against a changed plan")
    for key in ("confirmatory", "world", "rewards", "parts"):
        if plan.get(key) != now[key]:
            raise PlanError(f"{plan_path}: '{key}' differs from the study file {path}; a confirmatory claim is not "
                            f"judged against a changed plan")
    return plan
