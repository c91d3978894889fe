"""Tags and tag paths as users type them, shared by `modify`, `dump --tags` and later tools.

A tag is `(gggg,eeee)`, `gggg,eeee`, `ggggeeee` (hex) or a DICOM keyword (PS3.6 §6,
`PatientName`). A tag path follows dcmodify(1): ``{sequence[item].}*element`` where `item`
counts from zero or is `*` for every item, e.g. ``(0040,0275)[0].(0040,0007)`` or
``RequestAttributesSequence[*].ScheduledProcedureStepID``. The last node may itself carry an
item index (``ReferencedStudySequence[2]``) and then names an item rather than an element.

Resolution walks a pydicom Dataset. `containers(..., create=True)` is dcmodify's insert mode:
missing sequences and items on the way are created (items up to the index asked for).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from pydicom._dicom_dict import RepeatersDictionary
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag

ALL_ITEMS: Final = -1  # the `*` wildcard

_HEX_TAG = re.compile(r"^\(?\s*([0-9A-Fa-f]{4})\s*,\s*([0-9A-Fa-f]{4})\s*\)?$")
_HEX8 = re.compile(r"^(?:0x)?([0-9A-Fa-f]{8})$")
_NODE = re.compile(r"^(?P<tag>[^\[\]]+?)\s*(?:\[\s*(?P<item>\*|\d+)\s*\])?$")


# Repeating-group keywords (PS3.5 §7.6: 50xx curves, 60xx overlays) name their first group.
_REPEATER_KEYWORDS: Final = {
    entry[4]: int(mask.replace("x", "0"), 16) for mask, entry in RepeatersDictionary.items()
}


class TagPathError(ValueError):
    """A tag or tag path that cannot be parsed, or does not fit the data set."""


@dataclass(frozen=True, slots=True)
class PathNode:
    """One step: an element, optionally followed by an item index (`ALL_ITEMS` for `*`)."""

    tag: BaseTag
    item: int | None = None

    def __str__(self) -> str:
        text = f"({self.tag.group:04X},{self.tag.element:04X})"
        if self.item is None:
            return text
        return f"{text}[{'*' if self.item == ALL_ITEMS else self.item}]"


@dataclass(frozen=True, slots=True)
class TagPath:
    """A parsed path; every node but the last must carry an item index."""

    nodes: tuple[PathNode, ...]

    @property
    def leaf(self) -> PathNode:
        return self.nodes[-1]

    @property
    def is_nested(self) -> bool:
        return len(self.nodes) > 1

    def __str__(self) -> str:
        return ".".join(str(n) for n in self.nodes)


def parse_tag(text: str) -> BaseTag:
    """`(0010,0010)`, `0010,0010`, `00100010` or `PatientName` -> Tag."""
    text = text.strip()
    if m := _HEX_TAG.match(text):
        return Tag(int(m.group(1), 16), int(m.group(2), 16))
    if m := _HEX8.match(text):
        return Tag(int(m.group(1), 16))
    if text.isidentifier():
        tag = tag_for_keyword(text)
        if tag is None:
            tag = _REPEATER_KEYWORDS.get(text)
        if tag is None:
            raise TagPathError(f"unknown DICOM keyword {text!r}")
        return Tag(tag)
    raise TagPathError(f"not a tag: {text!r} (use (gggg,eeee), gggg,eeee or a keyword)")


def parse_path(text: str) -> TagPath:
    """Parse a dcmodify tag path (see the module docstring)."""
    # '.' separates nodes: neither a keyword nor a hex tag contains one.
    parts = text.strip().split(".") if text.strip() else []
    if not parts:
        raise TagPathError("empty tag path")
    nodes: list[PathNode] = []
    for index, part in enumerate(parts):
        m = _NODE.match(part.strip())
        if m is None:
            raise TagPathError(f"bad tag path node {part!r} in {text!r}")
        item = m.group("item")
        node = PathNode(
            parse_tag(m.group("tag")),
            None if item is None else ALL_ITEMS if item == "*" else int(item),
        )
        if index < len(parts) - 1 and node.item is None:
            raise TagPathError(f"sequence {part!r} in {text!r} needs an item index like [0]")
        nodes.append(node)
    return TagPath(tuple(nodes))


def parse_assignment(text: str) -> tuple[TagPath, str]:
    """`path=value` -> (path, value); the value may itself contain '=' (PN groups)."""
    path, sep, value = text.partition("=")
    if not sep:
        raise TagPathError(f"expected PATH=VALUE, got {text!r}")
    return parse_path(path), value


def tag_name(tag: BaseTag) -> str:
    """The keyword of a tag, or a hex rendering for private/unknown tags."""
    return keyword_for_tag(tag) or f"({tag.group:04X},{tag.element:04X})"


def _sequence(ds: Dataset, tag: BaseTag, *, create: bool) -> Sequence | None:
    if tag not in ds:
        if not create:
            return None
        if _dictionary_vr(tag) not in (None, "SQ"):
            raise TagPathError(f"{tag_name(tag)} is not a sequence")
        ds.add_new(tag, "SQ", [])
    elem = ds[tag]
    if elem.VR != "SQ":
        raise TagPathError(f"{tag_name(tag)} is {elem.VR}, not a sequence")
    if elem.value is None or elem.value == "":
        elem.value = []
    seq: Sequence = elem.value
    return seq


def _dictionary_vr(tag: BaseTag) -> str | None:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return None


def items_at(ds: Dataset, node: PathNode, *, create: bool) -> list[Dataset]:
    """The items that `node` (a sequence with an index) selects in `ds`."""
    seq = _sequence(ds, node.tag, create=create)
    if seq is None or node.item is None:
        return []
    if node.item == ALL_ITEMS:
        return list(seq)
    if node.item >= len(seq):
        if not create:
            return []
        while len(seq) <= node.item:
            seq.append(Dataset())
    return [seq[node.item]]


def containers(ds: Dataset, path: TagPath, *, create: bool = False) -> list[Dataset]:
    """The data sets that hold the leaf of `path` (the top level for a one-node path).

    With `create`, missing sequences and items on the way are inserted (dcmodify `-i`).
    """
    current = [ds]
    for node in path.nodes[:-1]:
        current = [item for parent in current for item in items_at(parent, node, create=create)]
    return current


def find(ds: Dataset, path: TagPath) -> list[tuple[Dataset, BaseTag]]:
    """(container, tag) for every existing element the path's leaf names."""
    leaf = path.leaf.tag
    return [(c, leaf) for c in containers(ds, path) if leaf in c]
