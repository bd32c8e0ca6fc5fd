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
