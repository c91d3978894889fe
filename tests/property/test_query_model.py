"""Property: ``find`` / ``retrieve`` agree with a plain-Python model of the Q/R information
model (filter a list of records) on random data and random queries, at every level of both
models, hierarchical and relational, with random (tiny) page sizes so that every source is
resumed across transactions."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workers.header import IndexAttributes
from workers.index.reader import IndexReader, Snapshot
from workers.index.schema import DuplicatePolicy, InstanceRecord
from workers.index.writer import IndexWriter
from workers.query import engine
from workers.query.engine import find, retrieve
from workers.query.identifier import Query, QueryError, QueryKey, make_query
from workers.query.keys import BY_KEYWORD, KEYS, MODEL_LEVELS

NAMES = ["SMITH^JOHN", "Smith^Anna", "SMYTHE^JO", "DOE^JANE", "doe^john", "SMITHSON^AL"]
DATES = ["20231231", "20240101", "20240115", "20240131", "20240201"]
MODALITIES = ["CT", "MR", "US"]

# ---- data ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudySpec:
    uid: str
    patient_id: str
    name: str
    date: str
    accession: str


study_specs = st.builds(
    StudySpec,
    uid=st.just(""),
    patient_id=st.sampled_from(["P1", "P2", "P3", "Q1"]),
    name=st.sampled_from(NAMES),
    date=st.sampled_from(DATES),
    accession=st.sampled_from(["A1", "A2", "B1", ""]),
)


@st.composite
def datasets(draw: st.DrawFn) -> list[InstanceRecord]:
    studies = draw(st.lists(study_specs, min_size=1, max_size=6))
    records = []
    for s_i, study in enumerate(studies):
        for se_i in range(draw(st.integers(1, 3))):
            modality = draw(st.sampled_from(MODALITIES))
            for i in range(draw(st.integers(1, 3))):
                attrs = IndexAttributes(
                    sop_class_uid="1.2.840.10008.5.1.4.1.1." + draw(st.sampled_from("24")),
                    sop_instance_uid=f"1.{s_i}.{se_i}.{i}", series_instance_uid=f"1.{s_i}.{se_i}",
                    study_instance_uid=f"1.{s_i}", patient_id=study.patient_id,
                    patient_name=study.name, study_date=study.date,
                    accession_number=study.accession, modality=modality,
                    series_number=str(se_i), instance_number=str(i),
                )
                records.append(InstanceRecord.from_attributes(
                    attrs, relpath="x", size_bytes=1, transfer_syntax_uid="1.2.840.10008.1.2",
                    received_at=0.0, calling_ae="A"))
    order = draw(st.permutations(range(len(records))))  # arrival order fixes "first instance"
    return [records[i] for i in order]


# ---- the model -------------------------------------------------------------------------------

RANK = {"PATIENT": 0, "STUDY": 1, "SERIES": 2, "IMAGE": 3}


def entities(records: list[InstanceRecord], level: str) -> dict[str, dict[str, str]]:
    """Entity unique key -> attribute keyword -> value, built straight from the records:
    each entity's attributes are those of its first instance, as the index defines them."""
    out: dict[str, dict[str, str]] = {}
    for r in records:
        k = {"PATIENT": r.patient_id, "STUDY": r.study_instance_uid,
             "SERIES": r.series_instance_uid, "IMAGE": r.sop_instance_uid}[level]
        if k in out:
            row = out[k]
        else:
            row = out[k] = {kw: str(getattr(r, kd.field)) for kw, kd in BY_KEYWORD.items()
                            if not kd.derived and RANK[kd.home] <= RANK[level]}
            row["_mods"] = ""
        mods = set(filter(None, row["_mods"].split("\\"))) | {r.modality}
        row["_mods"] = "\\".join(sorted(mods))
    if level != "PATIENT":  # patient attributes of a study: its own first instance's
        first_of_study: dict[str, InstanceRecord] = {}
        for r in records:
            first_of_study.setdefault(r.study_instance_uid, r)
        first_of_series: dict[str, InstanceRecord] = {}
        for r in records:
            first_of_series.setdefault(r.series_instance_uid, r)
        for k, row in out.items():
            study_uid = row["StudyInstanceUID"]
            if level in ("SERIES", "IMAGE"):  # a series' study is its first instance's
                series_first = first_of_series[row["SeriesInstanceUID"]]
                study_uid = row["StudyInstanceUID"] = series_first.study_instance_uid
            s = first_of_study[study_uid]
            for kw in ("PatientID", "PatientName", "StudyDate", "AccessionNumber"):
                row[kw] = str(getattr(s, BY_KEYWORD[kw].field))
            row["_mods"] = "\\".join(sorted({r.modality for r in records
                                             if r.study_instance_uid == study_uid}))
    return out


def model_match(keyword: str, key: str, value: str, mods: str) -> bool:
    if not key or key == "*":
        return True
    vr = BY_KEYWORD[keyword].vr
    if keyword == "ModalitiesInStudy":
        return any(fnmatchcase(m, key) for m in mods.split("\\"))
    if vr == "UI":
        return value in key.split("\\")
    if vr == "DA":
        if "-" in key:
            lo, hi = key.split("-")
            return bool(value) and (lo or "0") <= value <= (hi or "9" * 8)
        return value == key
    if not value:
        return False
    if vr == "PN":
        return fnmatchcase(value.upper(), key.upper())
    return any(fnmatchcase(value, k) for k in key.split("\\"))


def model_find(records: list[InstanceRecord], query: Query) -> list[str]:
    unique = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID",
              "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}[query.level]
    hits = []
    for row in entities(records, query.level).values():
        if all(model_match(KEYS[t].keyword, k.value, row.get(KEYS[t].keyword, ""), row["_mods"])
               for t, k in query.keys.items()):
            hits.append(row[unique])
    return sorted(hits)


# ---- random queries --------------------------------------------------------------------------

PATTERNS: dict[str, st.SearchStrategy[str]] = {
    "PatientID": st.sampled_from(["", "P1", "P2", "P*", "?1", "P1\\Q1", "Z9", "*"]),
    "PatientName": st.sampled_from(["", "SMITH^JOHN", "smith^anna", "SMI*", "sm?th*", "*JO*",
                                    "DOE^*", "D*E^J*", "*", "SMITHSON^AL", "X*"]),
    "StudyDate": st.sampled_from(["", "20240101", "20240101-20240131", "-20240101",
                                  "20240115-", "20240201-20240101", "19990101"]),
    "AccessionNumber": st.sampled_from(["", "A1", "A*", "?1", "B1\\A2"]),
    "ModalitiesInStudy": st.sampled_from(["", "CT", "MR", "US", "C*", "PT"]),
    "Modality": st.sampled_from(["", "CT", "MR", "M?"]),
}


@st.composite
def queries(draw: st.DrawFn, records: list[InstanceRecord]) -> Query:
    model = draw(st.sampled_from(["PATIENT", "STUDY"]))
    level = draw(st.sampled_from(MODEL_LEVELS[model]))
    relational = draw(st.booleans())
    rank = RANK[level]
    keys: dict[str, str] = {}
    for keyword, strategy in PATTERNS.items():
        kd = BY_KEYWORD[keyword]
        home = "STUDY" if kd.home == "PATIENT" and model == "STUDY" else kd.home
        if RANK[home] <= rank and (home != "PATIENT" or model == "PATIENT") and draw(st.booleans()):
            keys[keyword] = draw(strategy)
    known = {"PATIENT": sorted({r.patient_id for r in records}) + ["P9"],
             "STUDY": sorted({r.study_instance_uid for r in records}) + ["9.9"],
             "SERIES": sorted({r.series_instance_uid for r in records}) + ["9.9.9"],
             "IMAGE": sorted({r.sop_instance_uid for r in records})}
    unique = UNIQUE
    for lvl in MODEL_LEVELS[model][: MODEL_LEVELS[model].index(level) + 1]:
        above = lvl != level
        if above and not relational:  # hierarchical: one value of each unique key above
            keys[unique[lvl]] = draw(st.sampled_from(known[lvl]))
        elif draw(st.booleans()):
            values = draw(st.lists(st.sampled_from(known[lvl]), min_size=0, max_size=3))
            keys[unique[lvl]] = "\\".join(values)
        elif not above:
            keys[unique[lvl]] = ""  # returned, so results can be told apart
    return make_query(model, level, [QueryKey(BY_KEYWORD[k].tag, BY_KEYWORD[k].vr, v)
                                     for k, v in keys.items()], relational=relational)


@contextmanager
def index_of(records: list[InstanceRecord]) -> Iterator[IndexReader]:
    with tempfile.TemporaryDirectory() as d:
        w = IndexWriter(Path(d) / "index", map_size=16 * 1024 * 1024, sync=False)
        try:
            w.apply_batch(records, DuplicatePolicy.KEEP)
            reader = IndexReader.sharing(w.index)
            # A page must make progress: a source that resumed at its start again would loop
            # forever; cap the transactions one call can open (far above any honest count).
            real = reader.snapshot
            budget = [0]

            @contextmanager
            def capped() -> Iterator[Snapshot]:
                budget[0] += 1
                assert budget[0] < 20 * (len(records) + 10), "paging makes no progress"
                with real() as snap:
                    yield snap

            setattr(reader, "snapshot", capped)  # noqa: B010 - an instance-level wrapper
            yield reader
        finally:
            w.close()


@contextmanager
def pages(matches: int, examined: int) -> Iterator[None]:
    saved = engine.PAGE_MATCHES, engine.PAGE_EXAMINED
    engine.PAGE_MATCHES, engine.PAGE_EXAMINED = matches, examined
    try:
        yield
    finally:
        engine.PAGE_MATCHES, engine.PAGE_EXAMINED = saved


UNIQUE = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID",
          "IMAGE": "SOPInstanceUID"}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), records=datasets(), page=st.integers(1, 4), examined=st.integers(1, 6))
def test_find_agrees_with_the_model(data: st.DataObject, records: list[InstanceRecord],
                                    page: int, examined: int) -> None:
    with index_of(records) as reader, pages(page, examined):
        for _ in range(4):
            query = data.draw(queries(records))
            uk = BY_KEYWORD[UNIQUE[query.level]].tag
            results = [dict(r) for r in find(reader, query)]
            assert sorted(r[uk] for r in results) == model_find(records, query), query
            rows = entities(records, query.level)
            for r in results:  # every returned value is the entity's
                row = rows[r[uk]]
                for t, value in r.items():
                    keyword = KEYS[t].keyword
                    assert value == (row["_mods"] if keyword == "ModalitiesInStudy"
                                     else row[keyword]), (keyword, query)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), records=datasets(), page=st.integers(1, 4))
def test_retrieve_agrees_with_the_model(data: st.DataObject, records: list[InstanceRecord],
                                        page: int) -> None:
    with index_of(records) as reader, pages(page, page + 1):
        for _ in range(4):
            query = data.draw(queries(records))
            uk = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID",
                  "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}[query.level]
            levels = MODEL_LEVELS[query.model][: RANK[query.level] - (query.model == "STUDY")
                                               + 1]
            own = query.value(BY_KEYWORD[uk].tag)
            try:
                got = sorted(r.sop_instance_uid for r in retrieve(reader, query))
            except QueryError:
                assert not own or "*" in own or "?" in own
                continue
            # the model: entities named by the unique keys only, every instance below them
            ukeys = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID",
                     "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}
            named = Query(query.model, "IMAGE", {
                BY_KEYWORD[ukeys[lvl]].tag: query.keys[BY_KEYWORD[ukeys[lvl]].tag]
                for lvl in levels if BY_KEYWORD[ukeys[lvl]].tag in query.keys})
            assert got == model_find(records, named), query
