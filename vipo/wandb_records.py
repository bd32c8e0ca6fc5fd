"""Read an offline W&B run back from its folder: the ``.wandb`` record log decoded with wandb's own protobuf
classes (``wandb.proto.wandb_internal_pb2.Record``), so a run can be checked without a W&B account or server.

The log is LevelDB's log format (what ``wandb sync`` uploads): a 7-byte file header (``:W&B``, magic 0xBEE1,
version 0), then 32 KiB blocks of chunks, each ``crc32 (4) | length (2) | type (1) | data``, type FULL=1, FIRST=2,
MIDDLE=3, LAST=4; a record split over blocks is FIRST, MIDDLE..., LAST. W&B's checksum is zlib's crc32 of the data
seeded with the crc32 of the type byte.

    python -m vipo.wandb_records <run folder>     # what each offline W&B run under it holds
"""

from __future__ import annotations

import json
import struct
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

HEADER = struct.Struct("<4sHB")  # ident, magic, version
CHUNK = struct.Struct("<IHB")  # checksum, length, type
BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: str | Path) -> list:
    """Every record of a ``.wandb`` file as ``wandb_internal_pb2.Record``; raises ``ValueError`` naming the file
    on a bad header or checksum."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    ident, magic, version = HEADER.unpack_from(data, 0)
    if ident != b":W&B" or magic != 0xBEE1 or version != 0:
        raise ValueError(f"{path}: not a W&B record log (header {ident!r}, magic {magic:#x}, version {version})")
    out, pos, parts = [], HEADER.size, []
    while pos + CHUNK.size <= len(data):
        left = BLOCK - pos % BLOCK
        if left < CHUNK.size:  # a block's trailer (zeros): skip to the next block
            pos += left
            continue
        crc, length, kind = CHUNK.unpack_from(data, pos)
        if kind == 0 and length == 0:  # zero padding at the end of a block or of the file
            pos += left
            continue
        chunk = data[pos + CHUNK.size: pos + CHUNK.size + length]
        if len(chunk) < length:
            break  # a record cut off by a crash: everything before it is kept
        if zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != crc:
            raise ValueError(f"{path}: checksum mismatch in the chunk at byte {pos}")
        pos += CHUNK.size + length
        parts.append(chunk)
        if kind in (FULL, LAST):
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(b"".join(parts))
            out.append(rec)
            parts = []
        elif kind not in (FIRST, MIDDLE):
            raise ValueError(f"{path}: unknown chunk type {kind} at byte {pos}")
    return out


def _value(item) -> object:
    return json.loads(item.value_json) if item.value_json else None


def _key(item) -> str:
    return ".".join(item.nested_key) if item.nested_key else item.key


@dataclass
class OfflineRun:
    """What one offline W&B run folder (``wandb/offline-run-<time>-<id>``) holds."""

    folder: Path
    run_id: str = ""
    project: str = ""
    name: str = ""
    group: str = ""
    job_type: str = ""
    tags: list = field(default_factory=list)
    config: dict = field(default_factory=dict)  # nested, as logged
    history: list = field(default_factory=list)  # one dict per log() call
    summary: dict = field(default_factory=dict)  # the last summary values
    files: list = field(default_factory=list)  # paths under files/, relative to it

    def scalars(self, key: str) -> list[tuple]:
        """(iteration, value) of one logged scalar, in logging order."""
        return [(h.get("iteration"), h[key]) for h in self.history if key in h and not isinstance(h[key], dict)]

    def images(self, key: str) -> list[tuple]:
        """(iteration, image file under files/) of one logged image key."""
        return [(h.get("iteration"), h[key]["path"]) for h in self.history
                if isinstance(h.get(key), dict) and h[key].get("_type") == "image-file"]


def read_offline_run(folder: str | Path) -> OfflineRun:
    folder = Path(folder)
    logs = sorted(folder.glob("run-*.wandb"))
    if not logs:
        raise FileNotFoundError(f"{folder}: no run-*.wandb record log")
    run = OfflineRun(folder)
    for rec in records(logs[0]):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            run.run_id, run.project, run.name = r.run_id, r.project, r.display_name
            run.group, run.job_type, run.tags = r.run_group, r.job_type, list(r.tags)
            for item in r.config.update:
                _set(run.config, _key(item), _value(item))
        elif kind == "config":
            for item in rec.config.update:
                _set(run.config, _key(item), _value(item))
        elif kind == "history":
            row: dict = {}
            for item in rec.history.item:
                _nest(row, list(item.nested_key) or [item.key], _value(item))
            run.history.append({k: v for k, v in row.items() if not k.startswith("_")})
        elif kind == "summary":
            for item in rec.summary.update:
                _nest(run.summary, list(item.nested_key) or [item.key], _value(item))
            run.summary = {k: v for k, v in run.summary.items() if not k.startswith("_")}
    files = folder / "files"
    run.files = sorted(str(p.relative_to(files)) for p in files.rglob("*") if p.is_file()) if files.exists() else []
    return run


def _nest(out: dict, path: list, value) -> None:
    for part in path[:-1]:
        out = out.setdefault(part, {})
    out[path[-1]] = value


def _set(config: dict, key: str, value) -> None:
    if key == "_wandb":
        return
    if isinstance(value, dict) and set(value) == {"value"}:  # the run record stores {"value": v} per key
        value = value["value"]
    elif isinstance(value, dict) and "value" in value and "desc" in value:
        value = value["value"]
    config[key] = value


def offline_runs(run_dir: str | Path) -> list[OfflineRun]:
    """Every offline W&B run under ``<run_dir>/wandb`` in start order (a resumed run has one per session)."""
    return [read_offline_run(p) for p in sorted(Path(run_dir).glob("wandb/offline-run-*")) if p.is_dir()]


def describe(run: OfflineRun) -> str:
    """A few lines on what an offline run holds: identity, config, scalars, images and summary."""
    iters = sorted({h["iteration"] for h in run.history if "iteration" in h})
    images = sorted({k for h in run.history for k, v in h.items() if isinstance(v, dict)})
    evals = {k: v for k, v in run.summary.items() if k.startswith("eval/") and isinstance(v, (int, float))}
    lines = [f"{run.folder.name}",
             f"  id {run.run_id}  project {run.project}  name {run.name}",
             f"  group {run.group}  job_type {run.job_type}",
             f"  tags {', '.join(run.tags)}",
             f"  config: {len(run.config)} top-level keys, e.g. train.seed={run.config.get('train', {}).get('seed')} "
             f"advantage.mode={run.config.get('advantage', {}).get('mode')} tags={run.config.get('tags')}",
             f"  history: {len(run.history)} rows at iterations {iters}",
             *(f"  images {k}: iterations {[it for it, _ in run.images(k)]}" for k in images),
             f"  files/: {len(run.files)} files ({sum(f.startswith('media/images/') for f in run.files)} images)",
             "  summary: " + ", ".join(f"{k} {v:.4g}" for k, v in sorted(evals.items()))]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(__doc__)
        return 2
    runs = offline_runs(argv[0])
    if not runs:
        print(f"no offline W&B run under {argv[0]}/wandb")
        return 1
    for run in runs:
        print(describe(run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
