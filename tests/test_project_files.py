"""LICENSE, CITATION.cff and the README's BibTeX: present, standard, and naming the same paper and authors."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_license_is_mit_and_citation_cff_is_complete():
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "MIT" and cff["type"] == "software"
    assert {"message", "title", "authors", "version"} <= set(cff)
    version = re.search(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert cff["version"] == version


def test_readme_bibtex_names_the_paper_of_citation_cff():
    readme = (ROOT / "README.md").read_text()
    bib = re.search(r"```bibtex\n(@article\{.*?\n\})\n```", readme, re.S).group(1)
    paper = yaml.safe_load((ROOT / "CITATION.cff").read_text())["references"][0]
    fields = dict(re.findall(r"(\w+)\s*=\s*\{(.*)\},?\n", bib + "\n"))
    assert fields["title"] == paper["title"] and fields["year"] == str(paper["year"])
    assert "arXiv:2511.18719" in fields["journal"] and paper["identifiers"][0]["value"] == "arXiv:2511.18719"
    names = [f"{a['family-names']}, {a['given-names']}" for a in paper["authors"]]
    assert fields["author"].split(" and ") == names


def test_the_readme_notebook_commands_work_with_the_dev_extra(tmp_path):
    """`jupyter nbconvert --clear-output --inplace` (the README's command before committing a notebook) and
    `jupyter lab` come with the dev extra."""
    import json
    import subprocess
    import sys

    nb = json.loads(next((ROOT / "analysis" / "notebooks").glob("*.ipynb")).read_text())
    code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    code["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["42\n"]}]
    code["execution_count"] = 7
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(nb))
    jupyter = [sys.executable, "-m", "jupyter"]
    out = subprocess.run([*jupyter, "nbconvert", "--clear-output", "--inplace", str(path)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    cleared = json.loads(path.read_text())
    assert all(not c.get("outputs") and c.get("execution_count") is None
               for c in cleared["cells"] if c["cell_type"] == "code")
    lab = subprocess.run([*jupyter, "lab", "--version"], capture_output=True, text=True, timeout=300)
    assert lab.returncode == 0 and lab.stdout.strip()[0].isdigit(), lab.stderr[-2000:]
