"""Run a Query against the LMDB index, lazily (PS3.4 C.4.1.3 C-FIND, C.4.2.1.4 / C.4.3.1.4
C-MOVE / C-GET).

THEORY OF OPERATION
-------------------
A query is planned once: a *source* of candidate entities at the query level, picked from
the most selective key the index can answer, and the *matchers* of every key (PS3.4
C.2.2.2, ``matching``) at or above the level. Candidates come from, best first:
  1. the Unique Key of the level (one UID or a List of UIDs): direct gets;
  2. the Unique Key of a level above (SeriesInstanceUID -> series_instances,
     StudyInstanceUID -> study_series, and so down);
  3. an exact study key through its secondary index (PatientID, AccessionNumber, StudyDate,
     normalized PatientName, ModalitiesInStudy), the one with the fewest entries (LMDB
     counts duplicates for free) unless it has over ``EXACT_PREFERRED_BELOW`` and a range
     is available;
  4. a StudyDate range, or a literal prefix before a wild card (PatientName ``SMI*``,
     PatientID, AccessionNumber): a range scan of the secondary index;
  5. otherwise a full scan of the level's sub-database.
Studies found by 3/4 are expanded to their series and instances for lower levels. Every
candidate is then checked against every matcher, so the source only has to be a superset of
the matches (the index helpers in ``matching`` guarantee that for names and prefixes).

Attribute values come from the record of the level they belong to (``keys.KeyDef.home``):
patient attributes of STUDY and lower rows from the study record (which repeats them), the
patient counts from the patient record, parents found through the hierarchy the index fixed
(instance -> its series record -> that series' study record), never from what an instance
itself claims.

Laziness and transactions: results are generated page by page. Each page runs in its own
short read-only transaction (``IndexReader.snapshot``) and ends after ``PAGE_MATCHES``
matches or ``PAGE_EXAMINED`` candidates, remembering its position in the source; the next
page resumes there in a new transaction. So a million matches are never materialised, and a
slow consumer (pending responses over the network) never keeps a reader open. A source is a
function ``(snapshot, position) -> (position, key, record)`` items, positions ordered as the
underlying LMDB cursors; a page resumes at its last position (inclusive) and skips the item
it already consumed. Entities committed between pages appear if they sort after the
position, as with any cursor over a live database.

Known limit: PATIENT-level PatientName matching through by_patient_name relies on a patient's
name being its first study's name (schema invariant); after that study is deleted the
patient is found through its other studies only if their names match too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from appliance.dimse.status import Status
from workers.index.reader import IndexReader, Snapshot
from workers.index.schema import (
    InstanceRecord,
    PatientRecord,
    SeriesRecord,
    StudyRecord,
    key,
    normalize_person_name,
    patient_key,
    unpack,
    unpack_record,
)
from workers.query.identifier import Query, QueryError, QueryKey, Result
from workers.query.keys import (
    BY_KEYWORD,
    IMAGE,
    INSTANCE_AVAILABILITY,
    KEYS,
    MODEL_LEVELS,
    ONLINE,
    PATIENT,
    SERIES,
    STUDY,
    UNIQUE_KEY,
    KeyDef,
    depth,
    level_of,
)
from workers.query.matching import (
    Matcher,
    combined_date_time,
    compile_key,
    date_range,
    is_universal,
    literal_prefix,
    matches,
    person_name_index_key,
)

PAGE_MATCHES = 256  # matches per read transaction
PAGE_EXAMINED = 4096  # candidates per read transaction, matching or not
EXACT_PREFERRED_BELOW = 2000  # an exact key with fewer entries beats a range scan

Pos = tuple[Any, ...]
Item = tuple[Pos, bytes, Any]  # (position, entity key, decoded record or None)
Source = Callable[[Snapshot, Pos | None], Iterator[Item]]
T = TypeVar("T")

_TAG = {kw: kd.tag for kw, kd in BY_KEYWORD.items()}
# Combined Date Time Matching pairs (PS3.4 C.2.2.2.5.1).
_DATE_TIME_PAIRS = (("StudyDate", "StudyTime"), ("SeriesDate", "SeriesTime"),
                    ("ContentDate", "ContentTime"),
                    ("PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime"))
# Patient attributes a StudyRecord repeats (schema.StudyRecord).
_STUDY_PATIENT_FIELDS = frozenset({"patient_id", "patient_name", "patient_birth_date",
                                   "patient_sex", "issuer_of_patient_id"})
_EMPTY_PATIENT = PatientRecord("", "", "", "", "", "")
_LEVEL_RANK = {PATIENT: 0, STUDY: 1, SERIES: 2, IMAGE: 3}


# ---- rows --------------------------------------------------------------------------------


class _Cache:
    """Parent records read in one transaction (candidates cluster under few parents)."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap
        self.studies: dict[bytes, StudyRecord | None] = {}
        self.series: dict[bytes, SeriesRecord | None] = {}
        self.patients: dict[bytes, PatientRecord | None] = {}

    def study(self, k: bytes) -> StudyRecord | None:
        if k not in self.studies:
            self.studies[k] = self.snap.study(k)
        return self.studies[k]

    def series_of(self, k: bytes) -> SeriesRecord | None:
        if k not in self.series:
            self.series[k] = self.snap.series(k)
        return self.series[k]

    def patient(self, k: bytes) -> PatientRecord | None:
        if k not in self.patients:
            self.patients[k] = self.snap.patient(k)
        return self.patients[k]


class _Row:
    """One candidate entity at the query level with the parent records it needs."""

    __slots__ = ("cache", "instance", "patient", "series", "study")

    def __init__(self, cache: _Cache) -> None:
        self.cache = cache
        self.patient: PatientRecord | None = None
        self.study: StudyRecord | None = None
        self.series: SeriesRecord | None = None
        self.instance: InstanceRecord | None = None

    def patient_record(self) -> PatientRecord:
        if self.patient is None and self.study is not None:
            self.patient = self.cache.patient(patient_key(self.study.patient_id))
        return self.patient or _EMPTY_PATIENT


def _load(level: str, needs: int, k: bytes, record: Any, cache: _Cache) -> _Row | None:
    """The row for entity ``k`` with parents down to rank ``needs``; None if absent."""
    row = _Row(cache)
    snap = cache.snap
    if level == PATIENT:
        row.patient = record or snap.patient(k)
        return row if row.patient is not None else None
    if level == IMAGE:
        row.instance = record or snap.instance(k)
        if row.instance is None:
            return None
        if needs == _LEVEL_RANK[IMAGE]:
            return row  # no key reads a parent
        row.series = cache.series_of(key(row.instance.series_instance_uid))
    elif level == SERIES:
        row.series = record or snap.series(k)
    else:
        row.study = record or snap.study(k)
        return row if row.study is not None else None
    if row.series is None:
        return None
    if needs <= _LEVEL_RANK[STUDY]:
        row.study = cache.study(key(row.series.study_instance_uid))
        if row.study is None:
            return None
    return row


Getter = Callable[[_Row], str]


def _fmt(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\\".join(value)
    return str(value)


def _getter(kd: KeyDef, row_level: str) -> tuple[int, Getter]:
    """(rank of the record the value lives in, getter) for ``kd`` on rows of ``row_level``."""
    field = kd.field
    if kd.home == PATIENT and row_level != PATIENT:
        if field in _STUDY_PATIENT_FIELDS:
            return _LEVEL_RANK[STUDY], lambda row: _fmt(getattr(row.study, field))
        return _LEVEL_RANK[STUDY], lambda row: _fmt(getattr(row.patient_record(), field))
    attr = kd.home.lower() if kd.home != IMAGE else "instance"
    return _LEVEL_RANK[kd.home], lambda row: _fmt(getattr(getattr(row, attr), field))


# ---- sources -----------------------------------------------------------------------------


def _keys_source(keys: Iterable[bytes]) -> Source:
    ordered = sorted(set(keys))

    def source(snap: Snapshot, at: Pos | None) -> Iterator[Item]:
        for k in ordered:
            if at is None or k >= at[0]:
                yield (k,), k, None

    return source


def _dups_source(db: str, k: bytes) -> Source:
    def source(snap: Snapshot, at: Pos | None) -> Iterator[Item]:
        for v in snap.dups(db, k, at[0] if at is not None else None):
            yield (v,), v, None

    return source


def _range_source(db: str, low: bytes, high: bytes | None, prefix: bool) -> Source:
    def source(snap: Snapshot, at: Pos | None) -> Iterator[Item]:
        start = (at[0], at[1]) if at is not None else None
        for k, v in snap.range(db, low, high, prefix=prefix, start=start):
            yield (k, v), v, None

    return source


def _scan_source(db: str, decode: Callable[[bytes], Any]) -> Source:
    def source(snap: Snapshot, at: Pos | None) -> Iterator[Item]:
        for k, raw in snap.keys(db, at[0] if at is not None else None):
            yield (k,), k, decode(raw)

    return source


def _children(outer: Source, db: str) -> Source:
    """Each entity of ``outer`` expanded to its children listed in dupsort ``db``."""

    def source(snap: Snapshot, at: Pos | None) -> Iterator[Item]:
        outer_at = at[0] if at is not None else None
        for opos, okey, _ in outer(snap, outer_at):
            start = at[1] if at is not None and opos == outer_at else None
            for v in snap.dups(db, okey, start):
                yield (opos, v), v, None

    return source


def _patients_by_id_prefix(prefix: bytes) -> Source:
    def source(snap: Snapshot, at: Pos | None) -> Iterator[Item]:
        start = (at[0], b"") if at is not None else None
        for k, _ in snap.range("by_patient_id", prefix, None, prefix=True, start=start,
                               unique_keys=True):
            yield (k,), k, None  # a PatientID key is the patient key

    return source


def _patients_by_name(low: bytes, prefix: bool) -> Source:
    """Patients through the studies' by_patient_name entries. A patient is produced under
    the entry of its own normalized name only, once (``seen`` spans pages: it is reset per
    index key, so it holds one name's patients at most)."""
    seen: set[bytes] = set()
    current: list[bytes] = [b""]

    def source(snap: Snapshot, at: Pos | None) -> Iterator[Item]:
        start = (at[0], at[1]) if at is not None else None
        for name, study_key in snap.range("by_patient_name", low, None if prefix else low,
                                          prefix=prefix, start=start):
            if name != current[0]:
                current[0] = name
                seen.clear()
            study = snap.study(study_key)
            if study is None:
                continue
            pk = patient_key(study.patient_id)
            if pk in seen:
                continue
            patient = snap.patient(pk)
            if patient is None or key(normalize_person_name(patient.patient_name)) != name:
                continue
            seen.add(pk)
            yield (name, study_key), pk, patient

    return source


def _values(value: str) -> list[str]:
    return sorted({v.strip() for v in value.split("\\") if v.strip()})


def _prefix_key(prefix: str) -> bytes:
    # schema.key keeps the first 439 bytes of a long value verbatim: a shorter prefix works.
    return prefix.encode("utf-8", "surrogateescape")[:400]


def _has_wildcard(value: str) -> bool:
    return literal_prefix(value) != value


# ---- planning ----------------------------------------------------------------------------


class _Planner:
    def __init__(self, snap: Snapshot, query: Query) -> None:
        self.snap = snap
        self.query = query
        self.at = depth(query.model, query.level)

    def value(self, keyword: str) -> str:
        """The key's value when it takes part in matching at this level, else ''."""
        tag = _TAG[keyword]
        k = self.query.keys.get(tag)
        if k is None or is_universal(KEYS[tag].vr, k.value):
            return ""
        lvl = level_of(tag, self.query.model)
        return k.value if lvl is not None and depth(self.query.model, lvl) <= self.at else ""

    def source(self) -> Source:
        level = self.query.level
        if level == PATIENT:
            return self.patients()
        if level == STUDY:
            return self.studies() or _scan_source("studies", _unpack_study)
        if level == SERIES:
            if uids := self.value("SeriesInstanceUID"):
                return _keys_source(key(u) for u in _values(uids))
            studies = self.studies()
            if studies is not None:
                return _children(studies, "study_series")
            return _scan_source("series", _unpack_series)
        return self.instances()

    def instances(self) -> Source:
        if uids := self.value("SOPInstanceUID"):
            return _keys_source(key(u) for u in _values(uids))
        if uids := self.value("SeriesInstanceUID"):
            return _children(_keys_source(key(u) for u in _values(uids)), "series_instances")
        studies = self.studies()
        if studies is not None:
            return _children(_children(studies, "study_series"), "series_instances")
        return _scan_source("instances", unpack_record)

    def patients(self) -> Source:
        if pid := self.value("PatientID"):
            values = _values(pid)
            if not any(_has_wildcard(v) for v in values):
                return _keys_source(patient_key(v) for v in values)
            if len(values) == 1 and (p := literal_prefix(values[0])):
                return _patients_by_id_prefix(_prefix_key(p))
        if (name := self.value("PatientName")) and (pk := person_name_index_key(name)):
            norm, is_prefix = pk
            return _patients_by_name(_prefix_key(norm) if is_prefix else key(norm), is_prefix)
        return _scan_source("patients", _unpack_patient)

    def studies(self) -> Source | None:
        """The narrowest source of study keys the study-level keys allow, or None."""
        if uids := self.value("StudyInstanceUID"):
            return _keys_source(key(u) for u in _values(uids))
        exact: list[tuple[int, Source]] = []
        ranged: list[Source] = []
        for keyword, db in (("PatientID", "by_patient_id"), ("AccessionNumber", "by_accession"),
                            ("StudyDate", "by_study_date")):
            if value := self.value(keyword):
                self._single_valued(db, _values(value), keyword == "StudyDate", exact, ranged)
        if (name := self.value("PatientName")) and (pk := person_name_index_key(name)):
            norm, is_prefix = pk
            if is_prefix:
                ranged.append(_range_source("by_patient_name", _prefix_key(norm), None, True))
            else:
                k = key(norm)
                exact.append((self.snap.dup_count("by_patient_name", k),
                              _dups_source("by_patient_name", k)))
        mods = _values(self.value("ModalitiesInStudy"))
        if len(mods) == 1 and not _has_wildcard(mods[0]):
            k = key(mods[0])
            exact.append((self.snap.dup_count("by_modality", k), _dups_source("by_modality", k)))
        if exact:
            count, best = min(exact, key=lambda e: e[0])
            if count < EXACT_PREFERRED_BELOW or not ranged:
                return best
        return ranged[0] if ranged else None

    def _single_valued(self, db: str, values: list[str], is_date: bool,
                       exact: list[tuple[int, Source]], ranged: list[Source]) -> None:
        """Index use for a study attribute with one value per study (so the studies of
        several key values are disjoint and can be chained without duplicates)."""
        if is_date:
            if len(values) == 1 and (bounds := date_range("DA", values[0])) is not None:
                high = None if bounds[1] == "\uffff" else bounds[1].encode()
                ranged.append(_range_source(db, bounds[0].encode(), high, False))
                return
            if any("-" in v for v in values):
                return
        elif any(_has_wildcard(v) for v in values):
            if len(values) == 1 and (p := literal_prefix(values[0])):
                ranged.append(_range_source(db, _prefix_key(p), None, True))
            return
        keys = [key(v) for v in values]
        count = sum(self.snap.dup_count(db, k) for k in keys)
        src = _dups_source(db, keys[0]) if len(keys) == 1 else _children(_keys_source(keys), db)
        exact.append((count, src))


def _unpack_study(raw: bytes) -> StudyRecord:
    return unpack(StudyRecord, raw)


def _unpack_series(raw: bytes) -> SeriesRecord:
    return unpack(SeriesRecord, raw)


def _unpack_patient(raw: bytes) -> PatientRecord:
    return unpack(PatientRecord, raw)


@dataclass(frozen=True)
class _Plan:
    level: str
    source: Source
    needs: int  # lowest rank of record any getter reads (0 = patient, 3 = instance)
    matchers: tuple[tuple[Getter, Matcher], ...]
    combined: tuple[tuple[Getter, Getter, Callable[[str, str], bool]], ...]
    outputs: tuple[tuple[int, Getter | None, str], ...]  # (tag, getter, constant)
    never: bool  # a key no entity can match (Instance Availability other than ONLINE)

    def accepts(self, row: _Row) -> bool:
        for get, match in self.matchers:
            if not match(get(row)):
                return False
        return all(match(d(row), t(row)) for d, t, match in self.combined)

    def result(self, row: _Row) -> Result:
        return {tag: get(row) if get is not None else const for tag, get, const in self.outputs}


def _plan(reader: IndexReader, query: Query) -> _Plan:
    level = query.level
    at = depth(query.model, level)
    needs = _LEVEL_RANK[level]
    getters: dict[int, Getter] = {}
    outputs: list[tuple[int, Getter | None, str]] = []
    for tag in query.keys:
        kd = KEYS.get(tag)
        lvl = level_of(tag, query.model)
        if kd is not None and lvl is not None and depth(query.model, lvl) <= at:
            rank, getters[tag] = _getter(kd, level)
            needs = min(needs, rank)
            outputs.append((tag, getters[tag], ""))
        else:
            outputs.append((tag, None, ONLINE if tag == INSTANCE_AVAILABILITY else ""))
    compiled: dict[int, Matcher] = {}
    for tag in getters:
        m = compile_key(KEYS[tag].vr, query.keys[tag].value)
        if m is not None:
            compiled[tag] = m
    combined = []
    if query.combined_datetime:
        for date_kw, time_kw in _DATE_TIME_PAIRS:
            d, t = _TAG[date_kw], _TAG[time_kw]
            if d in compiled and t in compiled:
                pair = combined_date_time(query.keys[d].value, query.keys[t].value)
                if pair is not None:
                    del compiled[d], compiled[t]
                    combined.append((getters[d], getters[t], pair))
    availability = query.value(INSTANCE_AVAILABILITY)
    with reader.snapshot() as snap:
        source = _Planner(snap, query).source()
    return _Plan(level, source, needs, tuple((getters[t], m) for t, m in compiled.items()),
                 tuple(combined), tuple(outputs),
                 never=not matches("CS", availability, ONLINE))


def _run(reader: IndexReader, plan: _Plan, emit: Callable[[_Row], T]) -> Iterator[T]:
    """Page through ``plan.source``: one short read transaction per page (module notes)."""
    if plan.never:
        return
    at: Pos | None = None
    while True:
        batch: list[T] = []
        more = False
        with reader.snapshot() as snap:
            cache = _Cache(snap)
            items = plan.source(snap, at)
            try:
                resumed_at, examined = at, 0
                for pos, k, record in items:
                    if pos == resumed_at:
                        continue  # consumed by the previous page
                    at = pos
                    row = _load(plan.level, plan.needs, k, record, cache)
                    if row is not None and plan.accepts(row):
                        batch.append(emit(row))
                    examined += 1
                    if len(batch) >= PAGE_MATCHES or examined >= PAGE_EXAMINED:
                        more = True
                        break
            finally:
                items.close()  # type: ignore[attr-defined]  # sources are generators
        yield from batch
        if not more:
            return


# ---- API ---------------------------------------------------------------------------------


def find(reader: IndexReader, query: Query) -> Iterator[Result]:
    """The C-FIND matches of ``query``, lazily: one ``Result`` (tag -> value for every
    requested attribute, '' when unknown) per matching entity at the query level."""
    plan = _plan(reader, query)
    return _run(reader, plan, plan.result)


def retrieve(reader: IndexReader, query: Query) -> Iterator[InstanceRecord]:
    """Every instance under the entities a C-MOVE / C-GET Identifier names, lazily.

    Only Unique Keys identify what to retrieve (PS3.4 C.4.2.1.4.1, C.4.3.1.4.1): the one of
    the retrieve level is required (one value or a List of UIDs), those above are checked by
    ``make_query`` (one value each) unless relational-retrieval was granted; other keys are
    ignored. Raises QueryError 0xA900 without the retrieve level's Unique Key."""
    levels = MODEL_LEVELS[query.model][: depth(query.model, query.level) + 1]
    unique = [UNIQUE_KEY[lvl] for lvl in levels]
    own = query.value(unique[-1]).strip()
    if not own or _has_wildcard(own):
        tag = unique[-1]
        raise QueryError(f"Unique Key ({tag >> 16:04X},{tag & 0xFFFF:04X}) required to retrieve",
                         Status.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS)
    keys = {t: QueryKey(t, KEYS[t].vr, query.keys[t].value) for t in unique if t in query.keys}
    image_query = Query(query.model, IMAGE, keys, relational=True)
    plan = _plan(reader, image_query)
    return _run(reader, plan, _instance_of)


def _instance_of(row: _Row) -> InstanceRecord:
    assert row.instance is not None  # IMAGE-level rows always carry their instance
    return row.instance


__all__ = ["EXACT_PREFERRED_BELOW", "PAGE_EXAMINED", "PAGE_MATCHES", "find", "retrieve"]
