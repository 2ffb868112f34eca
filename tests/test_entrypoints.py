"""The quick look for installed entry points: it may say "maybe" when no package declares the
group (then importlib.metadata looks), but never "no" when one does."""

from __future__ import annotations

import importlib.metadata
import sys
import zipfile

import pytest

from gradcheck.entrypoints import may_declare

GROUPS = sorted({entry.group for dist in importlib.metadata.distributions()
                 for entry in dist.entry_points})


@pytest.mark.parametrize("group", [*GROUPS, "gradcheck.layers", "no.such.group"])
def test_never_no_where_importlib_metadata_finds_the_group(group):
    declared = bool(importlib.metadata.entry_points(group=group))
    assert may_declare(group) or not declared


def test_no_for_a_group_nobody_declares_and_yes_for_one_installed(tmp_path, monkeypatch):
    assert may_declare("no.such.group") is False
    info = tmp_path / "Somepkg-1.0.DIST-INFO"  # importlib.metadata ignores the case too
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: somepkg\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[no.such.group]\nx = somepkg\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert importlib.metadata.entry_points(group="no.such.group")
    assert may_declare("no.such.group") is True


@pytest.mark.parametrize("make", [
    lambda tmp: zipfile.ZipFile(tmp / "bundle.zip", "w").close() or tmp / "bundle.zip",
    lambda tmp: (tmp / "old.egg").mkdir() or tmp / "old.egg",
    lambda tmp: (tmp / "old.egg-link").write_text("/elsewhere\n") and tmp,
])
def test_what_it_cannot_read_sends_the_question_on(tmp_path, monkeypatch, make):
    monkeypatch.syspath_prepend(str(make(tmp_path)))
    assert may_declare("no.such.group") is True


def test_an_import_hook_that_finds_distributions_sends_the_question_on(monkeypatch):
    class Hook:
        def find_spec(self, *args):
            return None

        def find_distributions(self, *args):
            return iter(())

    monkeypatch.setattr(sys, "meta_path", [Hook(), *sys.meta_path])
    assert may_declare("no.such.group") is True
