"""Finding reward-model files: a local path, or a file inside a Hugging Face hub repository.

Learned scorers take ``path_or_id``: a local file or folder, or a hub id such as
``"yuvalkirstain/PickScore_v1"``. Nothing is downloaded unless a hub id is given and the
folder does not exist locally; a path that does not exist raises ``FileNotFoundError`` naming it.
"""

from __future__ import annotations

import os
import re
from typing import Optional

import torch

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def looks_like_hub_id(path_or_id: str) -> bool:
    """``owner/name`` with no further separators and no file extension, and not present locally."""
    return bool(_HUB_ID.match(path_or_id)) and not os.path.exists(path_or_id)


def resolve(path_or_id: str, filename: Optional[str] = None, what: str = "checkpoint") -> str:
    """Return a local path for ``path_or_id`` (or ``path_or_id/filename``).

    - a local file: returned as is (``filename`` is ignored);
    - a local folder: ``folder/filename`` when ``filename`` is given, else the folder;
    - a hub id: ``filename`` is fetched with ``huggingface_hub`` (or the repository snapshot when
      ``filename`` is None).
    Raises ``FileNotFoundError`` naming what was looked for.
    """
    path = os.path.expanduser(path_or_id)
    if os.path.isfile(path):
        return path
    if os.path.isdir(path):
        if filename is None:
            return path
        inner = os.path.join(path, filename)
        if not os.path.exists(inner):
            raise FileNotFoundError(f"{what}: {inner!r} does not exist")
        return inner
    if not looks_like_hub_id(path_or_id):
        raise FileNotFoundError(f"{what}: {path_or_id!r} does not exist (and is not a hub id 'owner/name')")
    try:
        import huggingface_hub

        if filename is None:
            return huggingface_hub.snapshot_download(path_or_id)
        return huggingface_hub.hf_hub_download(path_or_id, filename)
    except Exception as err:  # offline, unknown repo, gated model ...
        target = f"{path_or_id}/{filename}" if filename else path_or_id
        raise FileNotFoundError(f"{what}: {path_or_id!r} is not a local path and {target!r} could not be "
                                f"fetched from the hub ({type(err).__name__}: {err})") from err


def load_torch_checkpoint(path: str) -> dict:
    """``torch.load`` on CPU without executing pickled code (tensors and plain containers only)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    return torch.load(path, map_location="cpu", weights_only=True)


def strip_prefix(state_dict: dict, prefix: str) -> dict:
    """Keys starting with ``prefix``, with the prefix removed (others dropped)."""
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
