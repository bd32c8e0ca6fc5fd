"""Prompt sets: built-in lists, text files, and the HPDv2 hub cache (never downloads: the hub is mocked or
offline)."""

import json

import pytest

import vipo.prompts as P
from vipo.prompts import HPDV2_STYLES, PromptSetUnavailable, load_prompts, prompt_set_name


def test_builtin_sets():
    mini = load_prompts("drawbench-mini")
    assert len(mini) == 30 and len(set(mini)) == 30 and all(p.strip() == p and p for p in mini)
    assert len(load_prompts("toy")) == 16
    assert prompt_set_name("drawbench-mini") == "drawbench-mini"


def test_text_file_and_errors(tmp_path):
    f = tmp_path / "my_set.txt"
    f.write_text("  first prompt \n\nsecond\n")
    assert load_prompts(str(f)) == ["first prompt", "second"]
    assert prompt_set_name(str(f)) == "my_set"
    with pytest.raises(FileNotFoundError, match="drawbench-mini, hpdv2"):
        load_prompts("no-such-set")
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        load_prompts(str(tmp_path / "empty.txt"))


def fill_cache(root):
    for style in HPDV2_STYLES:
        path = root / "hpdv2" / f"{style}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps([f"{style} prompt {k}" for k in range(2)]))


def test_hpdv2_from_a_filled_cache(tmp_path, monkeypatch):
    fill_cache(tmp_path)
    monkeypatch.setenv("VIPO_PROMPT_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert load_prompts("hpdv2") == ["anime prompt 0", "anime prompt 1", "concept-art prompt 0",
                                     "concept-art prompt 1", "paintings prompt 0", "paintings prompt 1",
                                     "photo prompt 0", "photo prompt 1"]
    assert load_prompts("hpdv2-photo") == ["photo prompt 0", "photo prompt 1"]
    (tmp_path / "hpdv2/paintings.json").write_text('{"not": "a list"}')
    with pytest.raises(ValueError, match="paintings.json: expected a JSON list"):
        load_prompts("hpdv2")


def test_hpdv2_offline_without_cache_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("VIPO_PROMPT_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PromptSetUnavailable) as e:
        load_prompts("hpdv2")
    msg = str(e.value)
    assert str(tmp_path / "hpdv2") in msg and "zhwang/HPDv2" in msg and "benchmark/" in msg
    assert "prompts=drawbench-mini" in msg and "HF_HUB_OFFLINE" in msg
    assert not (tmp_path / "hpdv2").exists()


def test_hpdv2_first_use_fetches_once_and_caches(tmp_path, monkeypatch):
    import huggingface_hub

    hub = tmp_path / "hub"
    hub.mkdir()
    calls = []

    def fake_download(repo_id, filename, subfolder=None, repo_type=None):
        calls.append((repo_id, subfolder, filename, repo_type))
        path = hub / filename
        path.write_text(json.dumps([f"hub {filename}"]))
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setenv("VIPO_PROMPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert load_prompts("hpdv2-anime") == ["hub anime.json"]
    assert calls == [("zhwang/HPDv2", "benchmark", "anime.json", "dataset")]
    assert json.loads((tmp_path / "cache/hpdv2/anime.json").read_text()) == ["hub anime.json"]
    assert len(load_prompts("hpdv2")) == 4 and len(calls) == 4  # anime came from the cache
    load_prompts("hpdv2")
    assert len(calls) == 4

    def failing(*a, **k):
        raise OSError("no route to host")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", failing)
    monkeypatch.setenv("VIPO_PROMPT_CACHE", str(tmp_path / "other"))
    with pytest.raises(PromptSetUnavailable, match="Download failed: OSError: no route to host"):
        P.hpdv2_prompts(("photo",))
