"""docs/: the generated reference is what the code's tables make, and every link between the pages
(and from the README) reaches a file that exists. No process, no Sphinx."""

import os
import re

import pytest

from _helpers import ROOT
from loadgen import docgen

DOCS = os.path.join(ROOT, "docs")


@pytest.mark.parametrize("name", sorted(docgen.GENERATED))
def test_the_generated_reference_is_what_the_tables_make(name):
    with open(os.path.join(DOCS, name), encoding="utf-8") as f:
        committed = f.read()
    assert committed == docgen.GENERATED[name](), f"docs/{name} is stale: run python -m loadgen.docgen"


def test_every_option_flag_and_criterion_metric_is_documented():
    from loadgen.criteria import METRICS
    from loadgen.options import OPTIONS

    options = open(os.path.join(DOCS, "options.rst"), encoding="utf-8").read()
    criteria = open(os.path.join(DOCS, "criteria.rst"), encoding="utf-8").read()
    assert all(f"``{o.flag}" in options for o in OPTIONS if o.flag)
    assert all(f"``{m}``" in criteria for m in METRICS)


def test_check_mode_names_a_stale_file(tmp_path, monkeypatch, capsys):
    for name in docgen.GENERATED:
        (tmp_path / name).write_text("old\n")
    monkeypatch.setattr(docgen, "DOCS", str(tmp_path))
    assert docgen.main(["--check"]) == 1
    assert "options.rst" in capsys.readouterr().err
    assert docgen.main([]) == 0 and docgen.main(["--check"]) == 0


def _pages():
    pages = [os.path.join(ROOT, "README.rst")]
    pages += [os.path.join(DOCS, n) for n in sorted(os.listdir(DOCS)) if n.endswith(".rst")]
    return pages


@pytest.mark.parametrize("page", _pages(), ids=os.path.basename)
def test_every_relative_link_reaches_a_file(page):
    text = open(page, encoding="utf-8").read()
    for target in re.findall(r"`[^`<]*<([^>`]+)>`_", text):
        if "://" in target or target.startswith("#"):
            continue
        path = os.path.normpath(os.path.join(os.path.dirname(page), target.split("#")[0]))
        assert os.path.exists(path), f"{os.path.basename(page)}: link to {target} — no such file"
