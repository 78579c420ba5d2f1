"""YAML files that remember where every value came from.

Sequences and stations are loaded with ruamel.yaml's round-trip loader, which keeps line
numbers; errors found later (by pydantic or by the compiler) are mapped back to the line of
the field they concern.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.composer import MaxDepthExceededError
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from bench.errors import LoadError

Loc = Sequence[str | int]


@dataclass
class YamlSource:
    path: Path
    text: str
    root: Any

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def resolve(self, loc: Loc) -> tuple[int, list[str | int]]:
        """The 1-based line of the deepest element of ``loc`` in the file, and ``loc`` as written there."""
        node = self.root
        line = self.root.lc.line + 1 if isinstance(self.root, CommentedMap) else 1
        kept: list[str | int] = []
        parts = list(loc)
        for i, part in enumerate(parts):
            nxt = parts[i + 1] if i + 1 < len(parts) else None
            if isinstance(node, CommentedMap) and part in node:
                if nxt is not None and nxt != part and nxt in node:
                    continue  # ``part`` is a union tag that pydantic inserted; the next key sits here
                if nxt is not None and i > 0 and isinstance(parts[i - 1], int) and _is_tag(node[part], part, nxt):
                    continue  # the tag of a list item's kind (a step's): what follows is the item's own
                line = node.lc.key(part)[0] + 1
                node = node[part]
                kept.append(part)
            elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
                line = node.lc.item(part)[0] + 1
                node = node[part]
                kept.append(part)
            elif isinstance(node, CommentedMap | CommentedSeq) and nxt is not None:
                continue  # a tag or a missing field: stay on the enclosing node
            else:
                kept.append(part)
                break
        return line, kept

    def line(self, loc: Loc) -> int:
        return self.resolve(loc)[0]

    def error(self, loc: Loc, message: str) -> LoadError:
        line, kept = self.resolve(loc)
        return LoadError(message, self.path, line, field_name(kept))

    def validation_error(self, exc: ValidationError) -> LoadError:
        err = exc.errors()[0]
        return self.error(list(err["loc"]), _pydantic_message(err))


def _is_tag(child: Any, part: str | int, nxt: str | int) -> bool:
    """Whether ``part``, a key of a list item followed by ``nxt`` in pydantic's location, is the union tag.

    pydantic names a tagged union's member after the item's index: ``steps[1].measure.measure`` is
    the tag, then the kind's own key; ``steps[0].wait_until.timeout`` is the tag, then a field of
    the step itself, since the kind's key holds a plain value that has no fields.
    """
    if nxt == part:
        return not (isinstance(child, CommentedMap) and part in child)
    return not isinstance(child, CommentedMap | CommentedSeq)


def field_name(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _pydantic_message(err: Any) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required field is missing"
    msg = str(err["msg"])
    return msg[len("Value error, ") :] if msg.startswith("Value error, ") else msg


# Bounds on what a file may make the loader do (docs/sequences.md, "Limits"). A sequence or a
# station is a few kilobytes; these are far above any real one and far below what hurts a bench.
MAX_FILE_BYTES = 1_000_000
MAX_DEPTH = 64
MAX_ALIAS_EXPANSIONS = 1000


def load_yaml(path: Path, what: str) -> YamlSource:
    text = _read_text(path, what)
    try:
        root = _parse(text)
    except MaxDepthExceededError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark is not None else 1
        raise LoadError(f"invalid YAML: nested deeper than {MAX_DEPTH} levels", path, line) from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = (exc.problem or exc.context or "invalid YAML").strip()
        raise LoadError(f"invalid YAML: {problem}", path, line) from None
    except YAMLError as exc:
        raise LoadError(f"invalid YAML: {str(exc).splitlines()[0]}", path, 1) from None
    if not isinstance(root, CommentedMap):
        raise LoadError(f"a {what} file must be a YAML mapping", path, 1)
    _check_alias_expansion(root, path)
    return YamlSource(path, text, root)


M = TypeVar("M", bound=BaseModel)


def load_model(path: Path, what: str, model: type[M]) -> tuple[YamlSource, M]:
    """A ``what`` file (sequence, station ...) read and validated by ``model``; errors name the file, line and field."""
    src = load_yaml(path, what)
    try:
        return src, model.model_validate(plain(src.root))
    except ValidationError as exc:
        raise src.validation_error(exc) from None


@functools.lru_cache(maxsize=64)
def _parse(text: str) -> Any:
    """The parsed document of ``text``, parsed once per process for the same text.

    A fault-matrix worker loads the same station and sequence for every cell, and ruamel's
    round-trip parse costs about 0.2 s for the station. The key is the whole text, so an edited
    file is parsed again. The tree is shared between the loads of the same text: nothing may
    change it in place (every reader converts it with ``plain`` or only reads its line marks).
    A parse that fails raises and is not remembered.
    """
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    yaml.max_depth = MAX_DEPTH  # ruamel composes recursively: without a bound, deep nesting crashes it
    return yaml.load(text)


def _read_text(path: Path, what: str) -> str:
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise LoadError(f"{what} file not found", path, 1) from None
    except OSError as exc:
        raise LoadError(f"cannot read {what} file: {exc}", path, 1) from None
    if len(raw) > MAX_FILE_BYTES:
        raise LoadError(f"{what} file is larger than {MAX_FILE_BYTES // 1_000_000} MB", path, 1)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
            raise LoadError(f"{what} file is UTF-16 text; save it as UTF-8", path, 1) from None
        line = raw[: exc.start].count(b"\n") + 1
        raise LoadError(
            f"{what} file is not UTF-8 text (byte 0x{raw[exc.start]:02x} cannot be read); save it as UTF-8", path, line
        ) from None


def _check_alias_expansion(root: Any, path: Path) -> None:
    """Refuse aliases that expand past a small budget ("billion laughs") before anything expands them.

    ruamel shares one node among its aliases; :func:`plain` and pydantic copy it once per use,
    so nine nested lists of nine aliases become a billion nodes. Each visit of a container that
    was seen before is one expansion.
    """
    seen: set[int] = set()
    expansions = 0
    stack = [root]
    while stack:
        node = stack.pop()
        if not isinstance(node, CommentedMap | CommentedSeq):
            continue
        if id(node) in seen:
            expansions += 1
            if expansions > MAX_ALIAS_EXPANSIONS:
                raise LoadError(
                    f"aliases expand to more than {MAX_ALIAS_EXPANSIONS} copies of their anchors",
                    path,
                    node.lc.line + 1,
                )
        seen.add(id(node))
        stack.extend(node.values() if isinstance(node, CommentedMap) else node)


def plain(node: Any) -> Any:
    """ruamel's round-trip containers as plain dicts and lists (pydantic wants those).

    Bounded because :func:`load_yaml` refused deep nesting and alias bombs.
    """
    if isinstance(node, CommentedMap):
        return {str(k): plain(v) for k, v in node.items()}
    if isinstance(node, CommentedSeq):
        return [plain(v) for v in node]
    if isinstance(node, str):
        return str(node)
    return node
