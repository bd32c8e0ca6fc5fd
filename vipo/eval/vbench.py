"""VBench Quality / Semantic / Total scores from per-dimension results (a pure function).

Published procedure (Vchitect/VBench, ``scripts/cal_final_score.py`` with ``scripts/constant.py``):
each of the 16 dimensions is min-max normalised with fixed constants, ``(s - min) / (max - min)``, and
multiplied by its weight (0.5 for dynamic degree, 1 otherwise);
``Quality = sum(quality dims) / 6.5`` (the sum of the 7 quality weights),
``Semantic = sum(semantic dims) / 9``, ``Total = (4 Quality + 1 Semantic) / 5``.

Inputs are the fractions VBench writes to its ``*_eval_results.json`` (in [0, 1]); the leaderboard
and the paper print the outputs as percentages (x 100).
"""

from __future__ import annotations

from typing import Dict, Mapping

QUALITY_DIMENSIONS = (
    "subject consistency", "background consistency", "temporal flickering", "motion smoothness",
    "aesthetic quality", "imaging quality", "dynamic degree",
)
SEMANTIC_DIMENSIONS = (
    "object class", "multiple objects", "human action", "color", "spatial relationship", "scene",
    "appearance style", "temporal style", "overall consistency",
)
# (min, max) used to normalise each dimension (VBench constant.NORMALIZE_DIC)
NORMALIZATION: Dict[str, tuple] = {
    "subject consistency": (0.1462, 1.0),
    "background consistency": (0.2615, 1.0),
    "temporal flickering": (0.6293, 1.0),
    "motion smoothness": (0.706, 0.9975),
    "dynamic degree": (0.0, 1.0),
    "aesthetic quality": (0.0, 1.0),
    "imaging quality": (0.0, 1.0),
    "object class": (0.0, 1.0),
    "multiple objects": (0.0, 1.0),
    "human action": (0.0, 1.0),
    "color": (0.0, 1.0),
    "spatial relationship": (0.0, 1.0),
    "scene": (0.0, 0.8222),
    "appearance style": (0.0009, 0.2855),
    "temporal style": (0.0, 0.364),
    "overall consistency": (0.0, 0.364),
}
DIMENSION_WEIGHTS: Dict[str, float] = {d: (0.5 if d == "dynamic degree" else 1.0) for d in NORMALIZATION}
QUALITY_WEIGHT = 4.0  # weight of Quality in Total
SEMANTIC_WEIGHT = 1.0  # weight of Semantic in Total


def canonical_dimension(name: str) -> str:
    """``"subject_consistency"`` / ``"Subject Consistency"`` -> ``"subject consistency"``."""
    return " ".join(name.replace("_", " ").lower().split())


def normalized_dimension_scores(scores: Mapping[str, float], missing: str = "error") -> Dict[str, float]:
    """Weighted, min-max normalised score of each of the 16 dimensions.

    missing: ``"error"`` raises ``KeyError`` naming absent dimensions; ``"zero"`` scores them 0 as the
    published script does (which then normalises 0, e.g. to a negative value for subject consistency).
    """
    if missing not in ("error", "zero"):
        raise ValueError(f"missing must be 'error' or 'zero', got {missing!r}")
    given = {canonical_dimension(k): float(v) for k, v in scores.items()}
    unknown = sorted(set(given) - set(NORMALIZATION))
    if unknown:
        raise KeyError(f"unknown VBench dimensions {unknown}; known: {sorted(NORMALIZATION)}")
    absent = [d for d in NORMALIZATION if d not in given]
    if absent and missing == "error":
        raise KeyError(f"VBench dimensions missing: {absent}")
    too_big = {d: v for d, v in given.items() if not -1e-9 <= v <= 1 + 1e-9}
    if too_big:
        raise ValueError(f"VBench dimension scores are fractions in [0, 1]; got {too_big} "
                         "(divide percentages by 100)")
    out = {}
    for dim, (lo, hi) in NORMALIZATION.items():
        out[dim] = (given.get(dim, 0.0) - lo) / (hi - lo) * DIMENSION_WEIGHTS[dim]
    return out


def vbench_totals(scores: Mapping[str, float], missing: str = "error") -> Dict[str, float]:
    """``{"quality", "semantic", "total"}`` (fractions) from the 16 per-dimension scores."""
    norm = normalized_dimension_scores(scores, missing)
    quality = sum(norm[d] for d in QUALITY_DIMENSIONS) / sum(DIMENSION_WEIGHTS[d] for d in QUALITY_DIMENSIONS)
    semantic = sum(norm[d] for d in SEMANTIC_DIMENSIONS) / sum(DIMENSION_WEIGHTS[d] for d in SEMANTIC_DIMENSIONS)
    total = (QUALITY_WEIGHT * quality + SEMANTIC_WEIGHT * semantic) / (QUALITY_WEIGHT + SEMANTIC_WEIGHT)
    return {"quality": quality, "semantic": semantic, "total": total}


def vbench_totals_covering(scores: Mapping[str, float], zero_fill: bool = False) -> Dict[str, dict]:
    """Quality / Semantic / Total, each saying which dimensions it covers.

    Returns ``{"quality" | "semantic" | "total": {"value", "complete", "covers", "missing", "zero_filled"}}``.
    With every dimension of a score present, ``value`` is the published number (``vbench_totals``). Otherwise,
    by default, ``value`` is the weighted mean of the normalised scores of the dimensions present
    (``sum(w_d n_d) / sum(w_d)`` over ``covers``; Total mixes the two partial means 4:1 and needs both) and
    ``complete`` is False: a number that is not VBench's. ``zero_fill=True`` is the published script's rule
    instead: absent dimensions score 0 (listed in ``zero_filled``), the published formula is applied.
    """
    given = {canonical_dimension(k): float(v) for k, v in scores.items()}
    present = [d for d in NORMALIZATION if d in given]
    absent = [d for d in NORMALIZATION if d not in given]
    norm = normalized_dimension_scores(given, missing="zero")
    groups = {"quality": QUALITY_DIMENSIONS, "semantic": SEMANTIC_DIMENSIONS}
    out: Dict[str, dict] = {}
    for name, dims in groups.items():
        covers = [d for d in dims if d in given]
        missing_here = [d for d in dims if d not in given]
        use = list(dims) if zero_fill else covers  # zero-fill: every dimension, absent ones normalised from 0
        value = (sum(norm[d] for d in use) / sum(DIMENSION_WEIGHTS[d] for d in use)) if use else None
        out[name] = {"value": value, "complete": not missing_here, "covers": covers, "missing": missing_here,
                     "zero_filled": missing_here if zero_fill else []}
    q, s = out["quality"]["value"], out["semantic"]["value"]
    total = None if q is None or s is None else (QUALITY_WEIGHT * q + SEMANTIC_WEIGHT * s) / (QUALITY_WEIGHT
                                                                                             + SEMANTIC_WEIGHT)
    out["total"] = {"value": total, "complete": not absent, "covers": present, "missing": absent,
                    "zero_filled": absent if zero_fill else []}
    return out


def read_vbench_results(paths) -> Dict[str, dict]:
    """Per-dimension results written by the ``vbench`` package (its own environment: ``make vbench-env``).

    ``paths``: a ``*_eval_results.json`` file, a folder of them, or a list of either. Each file maps a
    dimension to ``[score, per_video_list]`` (VBench's format; a bare number is accepted too).
    Returns ``{canonical dimension: {"score": float, "n": videos or None, "file": str}}``; a dimension
    given twice is an error.
    """
    import json
    from pathlib import Path

    files: list = []
    for p in [paths] if isinstance(paths, (str, Path)) else list(paths):
        p = Path(p)
        if p.is_dir():
            found = sorted(p.glob("*_eval_results.json")) or sorted(p.glob("*.json"))
            if not found:
                raise FileNotFoundError(f"no VBench results (*_eval_results.json) in folder {p}")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"VBench results {p} do not exist")
    out: Dict[str, dict] = {}
    for f in files:
        data = json.loads(f.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"{f}: expected VBench's {{dimension: [score, per-video list]}}, got {type(data).__name__}")
        for dim, entry in data.items():
            name = canonical_dimension(dim)
            if name in out:
                raise ValueError(f"VBench dimension {name!r} appears in both {out[name]['file']} and {f}")
            if isinstance(entry, (list, tuple)) and entry and isinstance(entry[0], (int, float)):
                score, n = float(entry[0]), (len(entry[1]) if len(entry) > 1 and isinstance(entry[1], list) else None)
            elif isinstance(entry, (int, float)):
                score, n = float(entry), None
            else:
                raise ValueError(f"{f}: dimension {dim!r} is not [score, per-video list]: {str(entry)[:80]}")
            out[name] = {"score": score, "n": n, "file": str(f)}
    return out
