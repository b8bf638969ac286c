"""The project index's text tests, which decide before any parse whether a
module can matter, against the plain definitions they stand for."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from loop2scan.analysis.project import _IMPORT, _WORD, _import_statements, _key, has_word, module_name

# word characters, digits, separators, a non-ASCII letter and line breaks: the cases the word test must get right
TEXT = st.text(alphabet="ab_19 .\u00e9\n(x", max_size=14)
WORD = st.text(alphabet="ab_19\u00e9", min_size=1, max_size=3)


@settings(max_examples=3000, deadline=None)
@given(TEXT, WORD)
def test_has_word_is_membership_in_the_words_of_the_text(text, word):
    assert has_word(text, word) == (word in set(_WORD.findall(text)))


def test_has_word_examples():
    assert has_word("x = layer(h)", "layer")
    assert not has_word("x = layers(h)", "layer")
    assert not has_word("x = self_layer(h)", "layer")
    assert has_word("1layer", "layer")  # `1layer` reads as the number 1, then the word `layer`
    assert not has_word("a1layer", "layer")
    assert not has_word("layer", "1layer")


PIECES = ["import os", "from . import (a,\n b)", "x = 1; import y", "  from a.b import c as d # import e",
          "important = 1", "from x import (\n import_ok)", " import z, w", "from  import x", "\r\n",
          "#import q", "from .m import *", "if x:\n    import q"]


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(PIECES), st.sampled_from(["\n", "", " ", ";"])), max_size=8))
def test_import_statements_are_the_regex_matches(pieces):
    text = "".join(a + b for a, b in pieces)
    expected = [(m.start(), m.end(), m.groups()) for m in _IMPORT.finditer(text)]
    assert [(m.start(), m.end(), m.groups()) for m in _import_statements(text)] == expected


def test_module_names_and_keys_with_a_shared_memo(tmp_path):
    pkg = tmp_path / "pkg" / "sub"
    pkg.mkdir(parents=True)
    for d in (tmp_path / "pkg", pkg):
        (d / "__init__.py").write_text("")
    (pkg / "m.py").write_text("")
    (tmp_path / "script.py").write_text("")
    bad = tmp_path / "not-a-name"
    bad.mkdir()
    (bad / "__init__.py").write_text("")
    (bad / "x.py").write_text("")
    link = tmp_path / "link.py"
    os.symlink(pkg / "m.py", link)
    memo: dict = {}
    cases = ((pkg / "m.py", ("pkg.sub.m", False)), (pkg / "__init__.py", ("pkg.sub", True)),
             (tmp_path / "pkg" / "__init__.py", ("pkg", True)), (tmp_path / "script.py", ("script", False)),
             (bad / "x.py", (None, False)))
    for path, expected in cases:
        assert module_name(str(path), memo) == expected == module_name(str(path))
    dirs: dict = {}
    for path in (pkg / "m.py", link, tmp_path / "script.py"):
        assert _key(str(path), dirs) == _key(str(path))
    assert _key(str(link), dirs) == _key(str(pkg / "m.py"), dirs)
