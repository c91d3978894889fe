"""Tag and tag-path parsing and resolution (dcmodify path syntax)."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from appliance.tools.tagpath import (
    ALL_ITEMS,
    PathNode,
    TagPathError,
    containers,
    find,
    parse_assignment,
    parse_path,
    parse_tag,
)


@pytest.mark.parametrize(
    "text",
    ["(0010,0010)", "0010,0010", "00100010", "PatientName", " ( 0010 , 0010 ) ", "0x00100010"],
)
def test_parse_tag_forms(text: str) -> None:
    assert parse_tag(text) == Tag(0x0010, 0x0010)


def test_parse_tag_repeating_group_keyword() -> None:
    assert parse_tag("OverlayData") == Tag(0x6000, 0x3000)


@pytest.mark.parametrize("text", ["NotAKeyword", "(0010,001G)", "10,10", "", "Patient Name"])
def test_parse_tag_rejects(text: str) -> None:
    with pytest.raises(TagPathError):
        parse_tag(text)


def test_parse_nested_path() -> None:
    path = parse_path("(0040,0275)[0].(0040,0007)")
    assert path.nodes == (PathNode(Tag(0x00400275), 0), PathNode(Tag(0x00400007)))
    assert str(path) == "(0040,0275)[0].(0040,0007)"
    assert path.is_nested


def test_parse_keyword_path_and_wildcard() -> None:
    path = parse_path("RequestAttributesSequence[*].ScheduledProcedureStepID")
    assert path.nodes[0] == PathNode(Tag(0x00400275), ALL_ITEMS)
    assert path.leaf.tag == Tag(0x00400009)
    assert str(path) == "(0040,0275)[*].(0040,0009)"


def test_parse_path_leaf_item() -> None:
    path = parse_path("ReferencedStudySequence[2]")
    assert path.leaf == PathNode(Tag(0x00081110), 2)


@pytest.mark.parametrize(
    "text", ["(0040,0275).(0040,0007)", "(0040,0275)[x].(0040,0007)", ".PatientName", "[0]"]
)
def test_parse_path_rejects(text: str) -> None:
    with pytest.raises(TagPathError):
        parse_path(text)


def test_parse_assignment_keeps_equals_in_value() -> None:
    path, value = parse_assignment("PatientName=Yamada^Tarou=山田^太郎")
    assert path.leaf.tag == Tag(0x00100010)
    assert value == "Yamada^Tarou=山田^太郎"
    with pytest.raises(TagPathError):
        parse_assignment("PatientName")


def test_containers_create_builds_sequences_and_items() -> None:
    ds = Dataset()
    path = parse_path("(0008,1111)[2].(0008,1150)")
    assert containers(ds, path) == []  # read-only resolution creates nothing
    assert "ReferencedPerformedProcedureStepSequence" not in ds
    holders = containers(ds, path, create=True)
    assert len(ds.ReferencedPerformedProcedureStepSequence) == 3
    assert holders == [ds.ReferencedPerformedProcedureStepSequence[2]]


def test_containers_wildcard_and_find() -> None:
    ds = Dataset()
    ds.RequestAttributesSequence = [Dataset(), Dataset(), Dataset()]
    ds.RequestAttributesSequence[0].ScheduledProcedureStepID = "A"
    ds.RequestAttributesSequence[2].ScheduledProcedureStepID = "C"
    path = parse_path("RequestAttributesSequence[*].ScheduledProcedureStepID")
    assert len(containers(ds, path)) == 3
    found = find(ds, path)
    assert [c.ScheduledProcedureStepID for c, _ in found] == ["A", "C"]


def test_containers_refuses_non_sequence() -> None:
    ds = Dataset()
    ds.PatientName = "X"
    with pytest.raises(TagPathError):
        containers(ds, parse_path("PatientName[0].PatientID"), create=True)
