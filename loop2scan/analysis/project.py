"""The project a file belongs to: its other modules, looked up on demand.

A change that other modules can see (a parameter-list builder that returns
the stacked layout, a helper whose use of a value decides a rule) must be
judged with those modules in view.  :class:`ProjectIndex` is built once per
run from a list of files, cheaply (names and paths only), and answers
lookups lazily, parsing a module the first time a question needs it and
keeping it (one parse per module and process):

* :meth:`function`: the definition behind a qualified name
  (``pkg.layers.dense``), following re-exports;
* :meth:`importers`: the modules that import a name of a module, found by a
  word search over the files' text before any parse;
* :meth:`module_context`: the :class:`ModuleContext` of a module.

A module's dotted name comes from its package (directories with an
``__init__.py`` above it); a file outside any package is importable by its
stem, as scripts next to each other are.  The project is the tree being
processed plus the package of the nearest ``pyproject.toml``; files outside
the run are read-only: a rewrite that would have to edit one is declined.
"""

from __future__ import annotations

import ast
import os
import re
from typing import Iterable, Optional, Sequence

from ..files import SourceError, discover, read_text

# words one of which a parameter-list builder's text holds (it draws each layer from a PRNG key)
KEY_WORDS = ("split", "fold_in", "key", "rng", "random", "Key", "RNG")


class ProjectIndex:
    """The modules of a project (see the module docstring)."""

    def __init__(self, files: Iterable[str], writable: Iterable[str] = (), root: Optional[str] = None,
                 published: bool = False, layout: str = "stacked", framework: str = "auto",
                 policy=None) -> None:
        from ..policy import DEFAULT_POLICY

        self.root = root
        self.policy = policy if policy is not None else DEFAULT_POLICY  # the run's policy: every module sees it
        self.framework = framework  # the target asked for (``auto``: per module, from its imports)
        self.layout = layout  # how parameter lists change layout in this run ("stacked" or "keep")
        self.published = published  # an installable library: its public names are seen by unknown importers
        self.paths: dict[str, str] = {}  # module name -> path
        self.names: dict[str, str] = {}  # real path -> module name
        self.packages: set[str] = set()
        packages: dict[str, Optional[str]] = {}
        self._real_dirs: dict[str, str] = {}  # the files of a run share a few directories: each resolved once
        for path in files:
            name, is_package = module_name(path, packages)
            if name is None or name in self.paths:
                continue
            self.paths[name] = path
            self.names[self._key(path)] = name
            if is_package:
                self.packages.add(name)
        self.writable = {self._key(p) for p in writable}
        self._texts: dict[str, Optional[str]] = {}
        self._contexts: dict[str, object] = {}

    # -------------------------------------------------------------- pickling
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_texts"] = {}
        state["_contexts"] = {}
        state["_graph"] = None
        state["_forward"] = None
        state["_function_text"] = {}
        state["_may_build"] = {}
        state["_star"] = None
        return state

    # ---------------------------------------------------------------- modules
    def _key(self, path: str) -> str:
        return _key(path, self._real_dirs)

    def name_of(self, path: str) -> Optional[str]:
        return self.names.get(self._key(path))

    def is_writable(self, name: str) -> bool:
        path = self.paths.get(name)
        return path is not None and self._key(path) in self.writable

    def text(self, name: str) -> Optional[str]:
        if name not in self._texts:
            path = self.paths.get(name)
            try:
                self._texts[name] = read_text(path) if path is not None else None
            except SourceError:
                self._texts[name] = None
        return self._texts[name]

    def loaded(self, name: str):
        """The context of a module if it has been read already."""
        return self._contexts.get(name)

    def may_define_builder(self, name: str) -> bool:
        """A text test before parsing a module: it may define a parameter-list
        builder (a function returning a list built from keys or a range)."""
        text = self.text(name) or ""
        return ("return [" in text or ".append(" in text) and ("split" in text or "range(" in text)

    def function_may_build(self, qual: str) -> bool:
        """A text test before parsing: the module-level function ``qual`` may be a
        parameter-list builder (its text returns or appends to a list, and splits
        keys or loops over a range)."""
        memo = self.__dict__.setdefault("_may_build", {})
        if qual not in memo:
            memo[qual] = self._function_may_build(qual)
        return memo[qual]

    def _function_may_build(self, qual: str) -> bool:
        found = self.split(qual)
        if found is None or "." in found[1]:
            return False
        module, name = found
        body = self._function_texts(module).get(name)
        if body is None:
            # not defined there: re-exported, maybe; decide on the module
            return self.may_define_builder(module) and self.mentions(module, name)
        return ("return [" in body or ".append(" in body) and ("split" in body or "range(" in body) \
            and any(w in body for w in KEY_WORDS)

    def _function_texts(self, module: str) -> dict[str, str]:
        """The text of each module-level function of a module (read once)."""
        cache = self.__dict__.setdefault("_function_text", {})
        if module not in cache:
            text = self.text(module) or ""
            out = {}
            for start in sorted(set(_line_starts(text, "def")) | set(_line_starts(text, "async"))):
                m = _TOP_DEF.match(text, start)
                if m is not None:
                    after = _NEXT_TOP_STATEMENT.search(text, start)  # up to the next top-level statement
                    out[m.group(1)] = text[start: after.start() + 1 if after is not None else len(text)]
            cache[module] = out
        return cache[module]

    def mentions(self, module: str, word: str) -> bool:
        """``word`` is an identifier in the text of ``module`` (a quick test
        before a parse): one of its occurrences is a whole word."""
        text = self.text(module)
        return text is not None and has_word(text, word)

    def register(self, name: str, mctx) -> None:
        """Use ``mctx`` (the module being processed) for lookups of ``name``."""
        self._contexts[name] = mctx
        self._texts.setdefault(name, mctx.text)

    def module_context(self, name: str):
        """The analysis context of a module of the project (``None`` when it is
        not in the project or cannot be read or parsed)."""
        if name in self._contexts:
            return self._contexts[name]
        from ..frontend import SyntaxProblem, parse_for_analysis
        from .context import ModuleContext

        mctx = None
        text = self.text(name)
        if text is not None:
            try:
                tree, _ = parse_for_analysis(text)
            except (SyntaxProblem, RecursionError, ValueError):
                tree = None
            if tree is not None:
                from ..engine import detect_framework

                mctx = ModuleContext(tree, text, detect_framework(tree, self.framework), self.layout, project=self,
                                     name=name, policy=self.policy, path=self.paths.get(name))
        self._contexts[name] = mctx
        return mctx

    def is_package(self, name: str) -> bool:
        return name in self.packages

    def in_package(self, name: str) -> bool:
        """A module of a package (what a library distributes), not a stand-alone script."""
        if name in self.packages:
            return True
        return "." in name and name.rsplit(".", 1)[0] in self.packages

    # -------------------------------------------------------------- lookups
    def split(self, qual: str) -> Optional[tuple[str, str]]:
        """``pkg.mod.func`` -> ``("pkg.mod", "func")`` for a module of the project."""
        parts = qual.split(".")
        for i in range(len(parts) - 1, 0, -1):
            module = ".".join(parts[:i])
            if module in self.paths:
                return module, ".".join(parts[i:])
        return None

    def function(self, qual: Optional[str], _depth: int = 0):
        """``(FunctionDef, ModuleContext)`` for a module-level function of the
        project named by its qualified name, following re-exports."""
        if not qual or _depth > 5:
            return None
        found = self.split(qual)
        if found is None:
            return None
        module, rest = found
        if "." in rest:
            return None
        mctx = self.module_context(module)
        if mctx is None:
            return None
        fn = mctx.module_functions.get(rest)
        if fn is not None:
            return fn, mctx
        target = mctx.imports.lookup(rest)
        if target is not None and target != qual:
            return self.function(target, _depth + 1)
        return None

    def _import_graph(self) -> dict[str, set[str]]:
        """module -> the modules of the project that import it (or a name from it),
        read once per process from the import statements in the files' text."""
        graph = getattr(self, "_graph", None)
        if graph is not None:
            return graph
        graph, forward = {}, {}
        for other in self.paths:
            text = self.text(other)
            if text is None or "import" not in text:
                continue
            for imported in _imported_modules(text, other, self.is_package(other)):
                # `from a.b import c` names a.b, and a.b.c when that is a module
                target = imported if imported in self.paths else None
                if target is None and "." in imported and imported.rsplit(".", 1)[0] in self.paths:
                    target = imported.rsplit(".", 1)[0]
                if target is not None and target != other:
                    graph.setdefault(target, set()).add(other)
                    forward.setdefault(other, set()).add(target)
        self._graph, self._forward = graph, forward
        return graph

    def imports_of(self, module: str) -> set[str]:
        """The modules of the project ``module`` imports from."""
        self._import_graph()
        return self._forward.get(module, set())

    def importers_of_module_names(self, module: str) -> set[str]:
        """The modules of the project that import ``module`` (or a name from it)."""
        return self._import_graph().get(module, set())

    def importers(self, module: str, name: str) -> list[tuple[str, str]]:
        """Modules of the project that import ``module.name``: ``(importer, how)``
        where ``how`` is the local name (``from m import name as how``) or
        ``"<alias>.name"`` for ``import m as alias``."""
        target = f"{module}.{name}"
        out = []
        for other in sorted(self._import_graph().get(module, ())):
            if other == module or not self.mentions(other, name):
                continue
            mctx = self.module_context(other)
            if mctx is None:
                continue
            for local, qual in mctx.imports.all_aliases().items():
                if qual == target:
                    out.append((other, local))
                elif qual == module:
                    out.append((other, f"{local}.{name}"))
        return out

    def importers_of_module(self, module: str) -> list[tuple[str, str]]:
        """Modules that import ``module`` itself or a name from it: ``(importer, qualified name)``."""
        out = []
        for other in sorted(self._import_graph().get(module, ())):
            mctx = self.module_context(other)
            if mctx is None:
                continue
            for qual in mctx.imports.all_aliases().values():
                if qual == module or qual.startswith(module + "."):
                    out.append((other, qual))
                    break
        return out

    def star_importers(self, module: str) -> list[str]:
        """Modules that ``from module import *``."""
        out = []
        for other in self._star_importing():
            mctx = self.module_context(other)
            if mctx is not None and module in mctx.star_imports:
                out.append(other)
        return out

    def _star_importing(self) -> list[str]:
        """The modules whose text holds ``import *`` (read once per process)."""
        found = self.__dict__.get("_star")
        if found is None:
            found = self._star = [m for m in sorted(self.paths) if "import *" in (self.text(m) or "")]
        return found

    def public(self, module: str, name: str) -> Optional[str]:
        """Why ``module.name`` can be used where the project cannot see it
        (``None`` when it cannot): listed in ``__all__``, star-imported, or a
        public name of a published library."""
        mctx = self.module_context(module)
        if mctx is not None and name in (mctx.dunder_all or ()):
            return f"`{name}` is listed in `__all__` of `{module}`"
        if self.star_importers(module):
            return f"`{module}` is imported with `import *` by `{self.star_importers(module)[0]}`"
        if self.published and self.in_package(module) and not name.startswith("_") and not any(
                part.startswith("_") for part in module.split(".")):
            return f"`{module}.{name}` is a public name of a published library"
        return None


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WORD_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_DIGITS = frozenset("0123456789")


def has_word(text: str, word: str) -> bool:
    """``word`` is one of the words of ``text`` (``_WORD.findall(text)``), found
    without listing them: an occurrence counts when no word character follows
    it and what precedes it, past any digits, is not a word character."""
    if not _WORD.fullmatch(word):
        return False
    n = len(word)
    i = text.find(word)
    while i >= 0:
        end = i + n
        if end == len(text) or text[end] not in _WORD_CHARS:
            j = i
            while j > 0 and text[j - 1] in _DIGITS:
                j -= 1
            if j == 0 or text[j - 1] not in _WORD_CHARS:
                return True
        i = text.find(word, i + 1)
    return False


_TOP_DEF = re.compile(r"^(?:async[ \t]+)?def[ \t]+(\w+)", re.MULTILINE)
# the line break before a new top-level statement (not a closing bracket of a signature)
_NEXT_TOP_STATEMENT = re.compile(r"\n[^\s)\]#]")


def _line_starts(text: str, word: str):
    """The positions of the lines of ``text`` that start with ``word``."""
    if text.startswith(word):
        yield 0
    i = text.find("\n" + word)
    while i >= 0:
        yield i + 1
        i = text.find("\n" + word, i + 1)


_IMPORT = re.compile(r"^[ \t]*(?:from[ \t]+(?P<dots>\.*)(?P<from>[\w.]*)[ \t]+import[ \t]+(?P<names>\([^)]*\)|[^\n#;]+)"
                     r"|import[ \t]+(?P<modules>[^\n#;]+))", re.MULTILINE)


def _import_statements(text: str):
    """``_IMPORT.finditer(text)``, trying only the lines that hold the word
    ``import`` (the first line of every match does)."""
    done = 0  # where the last match ended: the next one starts at a line start after it
    i = text.find("import")
    while i >= 0:
        start = text.rfind("\n", 0, i) + 1
        m = _IMPORT.match(text, start) if start >= done else None
        if m is not None:
            yield m
            done = m.end()
        end = text.find("\n", i)
        if end < 0:
            return
        i = text.find("import", max(end, done))


def _imported_modules(text: str, module: str, is_package: bool) -> list[str]:
    """The modules an import statement of ``text`` names (``from a import b``
    names ``a`` and ``a.b``), relative imports resolved."""
    out: list[str] = []
    for m in _import_statements(text):
        if m.group("modules") is not None:
            for part in m.group("modules").split(","):
                name = part.strip().split(" as ")[0].strip()
                if name:
                    out.append(name)
            continue
        base = m.group("from")
        if m.group("dots"):
            pkg = relative_base(module, is_package, len(m.group("dots")))
            if pkg is None:
                continue
            base = f"{pkg}.{base}" if base else pkg
        if not base:
            continue
        out.append(base)
        for part in m.group("names").strip("() \t\n").split(","):
            name = part.strip().split(" as ")[0].strip()
            if name and name != "*" and name.isidentifier():
                out.append(f"{base}.{name}")
    return out


def module_name(path: str, memo: Optional[dict] = None) -> tuple[Optional[str], bool]:
    """The dotted module name of a source file, and whether it is a package's
    ``__init__`` (``memo``: see :func:`_package_of`)."""
    path = os.path.abspath(path)
    directory, filename = os.path.split(path)
    stem, ext = os.path.splitext(filename)
    if ext != ".py" or not stem.isidentifier():
        return None, False
    package = _package_of(directory, memo)
    if package is None:
        return None, False
    parts = [p for p in (package, "" if stem == "__init__" else stem) if p]
    if not parts:
        return None, False
    return ".".join(parts), stem == "__init__"


def _package_of(directory: str, memo: Optional[dict] = None) -> Optional[str]:
    """The dotted package a directory is (``""`` outside packages, ``None`` when
    a package on the way up has a name that is not an identifier).  ``memo``
    (directory -> answer) lets the files of one run look at each directory once."""
    if memo is not None and directory in memo:
        return memo[directory]
    if not os.path.isfile(os.path.join(directory, "__init__.py")):
        found: Optional[str] = ""
    else:
        parent, name = os.path.split(directory)
        above = _package_of(parent, memo) if parent != directory else ""
        if not name.isidentifier() or above is None:
            found = None
        else:
            found = f"{above}.{name}" if above else name
    if memo is not None:
        memo[directory] = found
    return found


def build_project(paths: Sequence[str], files: Sequence[str], root: Optional[str],
                  exclude: Sequence[str] = (), extend_exclude: Sequence[str] = (),
                  layout: str = "stacked", framework: str = "auto", policy=None) -> ProjectIndex:
    """The project of a run: the files of the run, plus the files of the
    project whose ``pyproject.toml`` is ``root``/pyproject.toml (or the tree of
    the given paths when there is none)."""
    project_files = list(files)
    published = False
    trees = {root} if root is not None and os.path.isdir(root) else set()
    # the packages the files belong to, even without a pyproject.toml
    for path in files:
        top = _top_package_dir(path)
        if top is not None and not any(_inside(top, t) for t in trees):
            trees.add(top)
    for tree in sorted(trees):
        more, _ = discover([tree], exclude=exclude, extend_exclude=extend_exclude, root=tree)
        project_files += [os.path.normpath(p) for p in more]
    if root is not None and os.path.isdir(root):
        published = _published(root)
    return ProjectIndex(project_files, writable=files, root=root, published=published, layout=layout,
                        framework=framework, policy=policy)


def _top_package_dir(path: str) -> Optional[str]:
    """The directory of the outermost package holding ``path`` (``None`` outside packages)."""
    directory = os.path.dirname(os.path.abspath(path))
    top = None
    while os.path.isfile(os.path.join(directory, "__init__.py")):
        top = directory
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    return top


def _inside(path: str, tree: str) -> bool:
    try:
        return os.path.commonpath([os.path.abspath(path), os.path.abspath(tree)]) == os.path.abspath(tree)
    except ValueError:
        return False


def project_root(paths: Sequence[str]) -> Optional[str]:
    """The directory of the nearest ``pyproject.toml`` (or ``setup.py``) above the
    common directory of ``paths``, not looking past a repository's root."""
    existing = [os.path.abspath(p) for p in paths if os.path.exists(p)]
    if not existing:
        return None
    dirs = [p if os.path.isdir(p) else os.path.dirname(p) for p in existing]
    try:
        cur = os.path.commonpath(dirs)
    except ValueError:
        return None
    while True:
        if any(os.path.isfile(os.path.join(cur, f)) for f in ("pyproject.toml", "setup.py")):
            return cur
        if any(os.path.isdir(os.path.join(cur, d)) for d in (".git", ".hg")):
            return None
        parent = os.path.dirname(cur)
        if parent == cur:
            return None
        cur = parent


def _published(root: str) -> bool:
    """An installable package: ``[project]`` in ``pyproject.toml``, or a ``setup.py``/``setup.cfg``."""
    if os.path.isfile(os.path.join(root, "setup.py")) or os.path.isfile(os.path.join(root, "setup.cfg")):
        return True
    path = os.path.join(root, "pyproject.toml")
    try:
        with open(path, "rb") as f:
            import tomllib

            return "project" in tomllib.load(f)
    except (OSError, ValueError, ImportError):
        return False


def _key(path: str, memo: Optional[dict] = None) -> str:
    """The identity of a file: its real path (symbolic links resolved), normalised.
    ``memo`` (directory -> real path) resolves each directory of a run once."""
    directory, name = os.path.split(os.path.abspath(path))
    if memo is None or not name or name in (".", "..") or os.path.islink(path):
        return os.path.normcase(os.path.realpath(path))
    real = memo.get(directory)
    if real is None:
        real = memo[directory] = os.path.realpath(directory)
    return os.path.normcase(os.path.join(real, name))


def relative_base(module: str, is_package: bool, level: int) -> Optional[str]:
    """The package a relative import of ``level`` dots in ``module`` starts from."""
    parts = module.split(".")
    if not is_package:
        parts = parts[:-1]
    if level - 1 > len(parts):
        return None
    parts = parts[:len(parts) - (level - 1)]
    return ".".join(parts) if parts else None


def star_imports(tree: ast.Module, module: Optional[str], is_package: bool) -> list[str]:
    out = []
    for stmt in tree.body:
        if isinstance(stmt, ast.ImportFrom) and any(a.name == "*" for a in stmt.names):
            base = stmt.module or ""
            if stmt.level and module is not None:
                pkg = relative_base(module, is_package, stmt.level)
                base = f"{pkg}.{base}" if pkg and base else (pkg or base)
            out.append(base)
    return out
