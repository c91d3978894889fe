"""Query/Retrieve as SCU: C-FIND, C-MOVE, C-GET and C-CANCEL (PS3.4 Annex C; PS3.7 §9.1.2-9.1.4,
§9.3.2.3) on the blocking ``SCU`` and our own sans-IO Upper Layer core.

THEORY OF OPERATION
-------------------
``find``/``move``/``get`` send the request and return a ``Responses`` iterator at once; each
``next()`` reads until the next response to that request arrives and yields it, so a caller
sees pending responses as they come. The final (non-Pending, PS3.7 C.2) response ends the
iteration. ``Responses.cancel()`` (or ``QRSCU.cancel(message_id)``) sends a C-CANCEL-RQ
between two responses; the SCP then ends the operation with Cancel (0xFE00) or whatever final
status it reached first, which the iterator still yields.

Receiving works on PDVs, not events: one P-DATA-TF may end one message and start the next, so
the PDVs of each ``PDataReceived`` go into a queue (their data are views that stay valid, see
``ul.buffer``) and messages are taken from it one at a time: the command set through the
``MessageAssembler``, then its data set into the sink the message calls for (memory for an
Identifier, a spool that rolls over to a temporary file for a C-GET sub-operation's object,
nowhere for a request we refuse).

Requests from the peer on our association: during a C-GET the SCP sends its sub-operation
C-STORE-RQs there (PS3.4 C.4.3.3); each is answered with the status ``on_store`` returns,
on the context it came on. Any other request is answered 0x0211 Unrecognized Operation and
its data set discarded (a stray C-CANCEL-RQ is ignored: it has no response).

Invariants:

* At most one operation is outstanding (no Asynchronous Operations Window is proposed). A
  new operation or ``release`` first finishes an unfinished one: C-CANCEL, then its
  responses are read and dropped until the final one, so the association stays in step.
* A response naming another Message ID, or of the wrong type, is a PS3.7 violation: A-ABORT
  (``AssociationAborted``), as in ``SCU``.
* If ``on_store`` raises, the association is aborted and the exception propagates: nothing
  is acknowledged that the callback failed on.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Generic, NamedTuple, TypeVar

import pydicom.uid as pyuid
from pydicom import Dataset

# The Identifier codec is the shared data set codec; these names are this module's API.
from appliance.dataset_codec import decode_dataset as decode_identifier
from appliance.dataset_codec import encode_dataset as encode_identifier
from appliance.dimse.assembler import CommandComplete, DataFragment
from appliance.dimse.command import RESPONSE_BIT, Priority, Tag
from appliance.dimse.fragment import fragment_message
from appliance.dimse.messages import (
    CCancelRQ,
    CFindRQ,
    CFindRSP,
    CGetRQ,
    CGetRSP,
    CMoveRQ,
    CMoveRSP,
    CStoreRQ,
    CStoreRSP,
    Message,
    TypedMessage,
    encode_message,
    message_from_elements,
)
from appliance.dimse.responses import RequestIdentity, status_response
from appliance.dimse.status import Status, StatusCategory, category
from appliance.dimse.transfer_syntax import EXPLICIT_VR_LE, IMPLICIT_VR_LE
from appliance.errors import DimseError
from appliance.negotiation.qr_classes import (
    PATIENT_ROOT_GET,
    QR_SOP_CLASSES,
    STUDY_ROOT_GET,
    relational_granted,
)
from appliance.scu import SCU, ProposedContext
from appliance.ul.association import PDataReceived, ReleaseRequested
from appliance.ul.pdu import PDV, RoleSelection, SOPClassExtendedNegotiation, UserSubItem

#: Proposed for Q/R contexts and, by default, for C-GET storage contexts (PS3.5 §10.1).
NATIVE_TRANSFER_SYNTAXES: Final = (EXPLICIT_VR_LE, IMPLICIT_VR_LE)

# Storage SOP Classes proposed with the SCP role for C-GET: the common ones, in the spirit of
# DCMTK getscu's default set (one context each; with the GET models well under 128).
_GET_STORAGE_KEYWORDS: Final = (
    "ComputedRadiographyImageStorage DigitalXRayImageStorageForPresentation "
    "DigitalXRayImageStorageForProcessing DigitalMammographyXRayImageStorageForPresentation "
    "DigitalMammographyXRayImageStorageForProcessing "
    "DigitalIntraOralXRayImageStorageForPresentation CTImageStorage EnhancedCTImageStorage "
    "LegacyConvertedEnhancedCTImageStorage UltrasoundMultiFrameImageStorage MRImageStorage "
    "EnhancedMRImageStorage MRSpectroscopyStorage EnhancedMRColorImageStorage "
    "LegacyConvertedEnhancedMRImageStorage UltrasoundImageStorage EnhancedUSVolumeStorage "
    "SecondaryCaptureImageStorage MultiFrameSingleBitSecondaryCaptureImageStorage "
    "MultiFrameGrayscaleByteSecondaryCaptureImageStorage "
    "MultiFrameGrayscaleWordSecondaryCaptureImageStorage "
    "MultiFrameTrueColorSecondaryCaptureImageStorage TwelveLeadECGWaveformStorage "
    "GeneralECGWaveformStorage AmbulatoryECGWaveformStorage HemodynamicWaveformStorage "
    "BasicVoiceAudioWaveformStorage GrayscaleSoftcopyPresentationStateStorage "
    "ColorSoftcopyPresentationStateStorage XRayAngiographicImageStorage EnhancedXAImageStorage "
    "XRayRadiofluoroscopicImageStorage EnhancedXRFImageStorage XRay3DAngiographicImageStorage "
    "XRay3DCraniofacialImageStorage BreastTomosynthesisImageStorage NuclearMedicineImageStorage "
    "RawDataStorage SpatialRegistrationStorage SpatialFiducialsStorage "
    "DeformableSpatialRegistrationStorage SegmentationStorage SurfaceSegmentationStorage "
    "RealWorldValueMappingStorage VLEndoscopicImageStorage VideoEndoscopicImageStorage "
    "VLMicroscopicImageStorage VLSlideCoordinatesMicroscopicImageStorage "
    "VLPhotographicImageStorage VideoPhotographicImageStorage "
    "OphthalmicPhotography8BitImageStorage OphthalmicPhotography16BitImageStorage "
    "OphthalmicTomographyImageStorage VLWholeSlideMicroscopyImageStorage BasicTextSRStorage "
    "EnhancedSRStorage ComprehensiveSRStorage Comprehensive3DSRStorage "
    "KeyObjectSelectionDocumentStorage MammographyCADSRStorage ChestCADSRStorage "
    "XRayRadiationDoseSRStorage EncapsulatedPDFStorage EncapsulatedCDAStorage "
    "PositronEmissionTomographyImageStorage EnhancedPETImageStorage "
    "LegacyConvertedEnhancedPETImageStorage RTImageStorage RTDoseStorage RTStructureSetStorage "
    "RTBeamsTreatmentRecordStorage RTPlanStorage RTBrachyTreatmentRecordStorage "
    "RTTreatmentSummaryRecordStorage RTIonPlanStorage RTIonBeamsTreatmentRecordStorage"
).split()
DEFAULT_GET_STORAGE_CLASSES: Final[tuple[str, ...]] = tuple(
    str(getattr(pyuid, k)) for k in _GET_STORAGE_KEYWORDS
)

_SPOOL_THRESHOLD_BYTES: Final = 16 * 1024 * 1024
_FAILED_SOP_INSTANCE_UID_LIST: Final = 0x00080058
_RELATIONAL: Final = b"\x01"  # PS3.4 C.5.1.1.1: byte 1 = 1, relational queries/retrieval

# on_store(rq, data set bytes or spooled file, transfer syntax UID) -> C-STORE-RSP status
OnStore = Callable[[CStoreRQ, "bytes | Path", str], int]


# ---- contexts and user information ---------------------------------------------------------


def qr_contexts(
    sop_classes: Iterable[str], transfer_syntaxes: Sequence[str] = NATIVE_TRANSFER_SYNTAXES
) -> list[ProposedContext]:
    """One context per Q/R (or any) SOP Class, proposing ``transfer_syntaxes``."""
    return [ProposedContext(uid, tuple(transfer_syntaxes)) for uid in dict.fromkeys(sop_classes)]


def get_contexts(
    models: Iterable[str] = (PATIENT_ROOT_GET, STUDY_ROOT_GET),
    storage_classes: Iterable[str] = DEFAULT_GET_STORAGE_CLASSES,
    transfer_syntaxes: Sequence[str] = NATIVE_TRANSFER_SYNTAXES,
    storage_transfer_syntaxes: Sequence[str] = NATIVE_TRANSFER_SYNTAXES,
) -> list[ProposedContext]:
    """Contexts for C-GET: the GET models, then the storage SOP Classes whose sub-operation
    C-STOREs we accept on the same association. Pair with ``QRSCU(scp_role_for=...)`` set to
    the same storage classes (``scp_roles`` builds the items)."""
    out = qr_contexts(models, transfer_syntaxes)
    out += qr_contexts(storage_classes, storage_transfer_syntaxes)
    return out


def scp_roles(sop_classes: Iterable[str]) -> tuple[RoleSelection, ...]:
    """SCP/SCU Role Selection items (PS3.7 D.3.3.4) proposing that we take the SCP role (and
    not the SCU role) for ``sop_classes``: what a C-GET SCU needs for the storage classes."""
    return tuple(RoleSelection(uid, False, True) for uid in dict.fromkeys(sop_classes))


# ---- results -------------------------------------------------------------------------------


class FindResponse(NamedTuple):
    """One C-FIND-RSP: a Pending one carries a matching Identifier, the final one None."""

    status: int
    identifier: Dataset | None


@dataclass(frozen=True, slots=True)
class RetrieveStatus:
    """One C-MOVE-RSP / C-GET-RSP (PS3.4 C.4.2.1.5, C.4.3.1.4): sub-operation counts (None
    when the SCP left them out) and, on a final response with failures, the Failed SOP
    Instance UID List (0008,0058)."""

    status: int
    remaining: int | None
    completed: int | None
    failed: int | None
    warning: int | None
    failed_sop_instance_uids: tuple[str, ...]
    error_comment: str | None
    response: CMoveRSP | CGetRSP

    @property
    def pending(self) -> bool:
        return category(self.status) is StatusCategory.PENDING


T = TypeVar("T")


class Responses(Generic[T]):
    """The responses to one request, yielded as they arrive (see the module docstring)."""

    def __init__(
        self,
        scu: QRSCU,
        message_id: int,
        context_id: int,
        response_type: type[TypedMessage],
        convert: Callable[[Message, bytes | None], T],
        on_store: OnStore | None = None,
    ) -> None:
        self.message_id = message_id
        self.context_id = context_id
        self.response_type = response_type
        self.on_store = on_store
        self.done = False
        self.cancel_sent = False
        self.last: Message | None = None  # the raw response last yielded
        self._scu = scu
        self._convert = convert

    def __iter__(self) -> Responses[T]:
        return self

    def __next__(self) -> T:
        if self.done:
            raise StopIteration
        try:
            msg, data = self._scu._next_response(self)
        except BaseException:
            self._finish()
            raise
        self.last = msg
        if category(getattr(msg, "status", 0)) is not StatusCategory.PENDING:
            self._finish()
        return self._convert(msg, data)

    def cancel(self) -> bool:
        """C-CANCEL-RQ for this operation (PS3.7 §9.3.2.3); False when it is already over or
        a cancel was already sent."""
        return self._scu.cancel(self.message_id)

    def drain(self) -> None:
        """Cancel if unfinished, then read and drop responses up to the final one."""
        if not self.done:
            self.cancel()
        for _ in self:
            pass

    def _finish(self) -> None:
        self.done = True
        self._scu._operation_finished(self)


# ---- the SCU -------------------------------------------------------------------------------


class _Spool:
    """A data set being received: memory up to a threshold, then a temporary file."""

    def __init__(self, threshold: int, spool_dir: str | None) -> None:
        self._threshold = threshold
        self._dir = spool_dir
        self._mem = bytearray()
        self._file: tempfile._TemporaryFileWrapper[bytes] | None = None

    def write(self, data: memoryview) -> None:
        if self._file is None and len(self._mem) + len(data) <= self._threshold:
            self._mem += data
            return
        if self._file is None:
            self._file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives past this call
                dir=self._dir, prefix=".qr-spool-", suffix=".tmp", delete=False
            )
            self._file.write(self._mem)
            self._mem = bytearray()
        self._file.write(data)

    def result(self) -> bytes | Path:
        if self._file is None:
            return bytes(self._mem)
        self._file.close()
        return Path(self._file.name)

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._file.name)


class QRSCU(SCU):
    """A blocking Q/R SCU (PS3.4 Annex C): ``find``, ``move``, ``get``, ``cancel``, plus
    everything ``SCU`` does (C-ECHO, C-STORE).

    ``scp_role_for``: SOP Classes for which we propose the SCP role (C-GET storage classes,
    see ``get_contexts``). ``relational``: propose SOP Class Extended Negotiation with
    relational queries / retrieval (PS3.4 C.5.1.1.1) for every proposed Q/R class.
    ``spool_dir``/``spool_threshold_bytes``: where a C-GET object larger than the threshold
    is spooled before ``on_store`` sees it (default: the system temp directory).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        contexts: Sequence[ProposedContext],
        calling_ae: str = "PACS_SCU",
        called_ae: str = "PACS",
        max_pdu_bytes: int = 1_048_576,
        timeout_s: float = 30.0,
        scp_role_for: Iterable[str] = (),
        relational: bool = False,
        spool_dir: str | os.PathLike[str] | None = None,
        spool_threshold_bytes: int = _SPOOL_THRESHOLD_BYTES,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(
            host, port, calling_ae=calling_ae, called_ae=called_ae, contexts=contexts,
            max_pdu_bytes=max_pdu_bytes, timeout_s=timeout_s, ssl_context=ssl_context,
        )  # fmt: skip
        self.scp_role_for = tuple(dict.fromkeys(scp_role_for))
        self.relational = relational
        self.spool_dir = os.fspath(spool_dir) if spool_dir is not None else None
        self.spool_threshold_bytes = spool_threshold_bytes
        self._pdvs: deque[PDV] = deque()
        self._current: Responses[Any] | None = None

    def __enter__(self) -> QRSCU:
        super().__enter__()
        return self

    # -- negotiation

    def _extra_user_items(self) -> tuple[UserSubItem, ...]:
        items: list[UserSubItem] = list(scp_roles(self.scp_role_for))
        if self.relational:
            proposed = dict.fromkeys(c.abstract_syntax for c in self.contexts)
            items += [
                SOPClassExtendedNegotiation(uid, _RELATIONAL)
                for uid in proposed
                if uid in QR_SOP_CLASSES
            ]
        return tuple(items)

    def relational_accepted(self, sop_class_uid: str) -> bool:
        """Whether the SCP granted relational queries/retrieval for ``sop_class_uid`` in its
        A-ASSOCIATE-AC (PS3.4 C.5.1.1.1); absent reply = not granted."""
        for item in self._ac_items(SOPClassExtendedNegotiation):
            if isinstance(item, SOPClassExtendedNegotiation) and item.sop_class_uid == (
                sop_class_uid
            ):
                return relational_granted(item.info)
        return False

    def scp_role_accepted(self, sop_class_uid: str) -> bool:
        """Whether the SCP accepted our SCP role for ``sop_class_uid`` (PS3.7 D.3.3.4)."""
        for item in self._ac_items(RoleSelection):
            if isinstance(item, RoleSelection) and item.sop_class_uid == sop_class_uid:
                return item.scp_role
        return False

    def _ac_items(self, cls: type) -> list[UserSubItem]:
        ac = self.associate_ac
        return ac.user_information.of_type(cls) if ac is not None else []

    # -- operations

    def find(
        self,
        model_sop_class_uid: str,
        identifier: Dataset | bytes,
        *,
        priority: int = Priority.MEDIUM,
    ) -> Responses[FindResponse]:
        """C-FIND (PS3.4 C.4.1): yields ``(status, Identifier or None)`` per response."""
        context_id, ts, data = self._prepare(model_sop_class_uid, identifier)
        rq = CFindRQ(self._next_message_id(), model_sop_class_uid, priority)

        def convert(msg: Message, raw: bytes | None) -> FindResponse:
            assert isinstance(msg, CFindRSP)
            return FindResponse(msg.status, self._decode(raw, ts) if raw is not None else None)

        return self._start(rq.message_id, context_id, encode_message(rq), data,
                           Responses(self, rq.message_id, context_id, CFindRSP, convert))

    def move(
        self,
        sop_class_uid: str,
        destination_ae: str,
        identifier: Dataset | bytes,
        *,
        priority: int = Priority.MEDIUM,
    ) -> Responses[RetrieveStatus]:
        """C-MOVE (PS3.4 C.4.2) to the AE the SCP knows as ``destination_ae``."""
        context_id, ts, data = self._prepare(sop_class_uid, identifier)
        rq = CMoveRQ(self._next_message_id(), sop_class_uid, destination_ae, priority)
        ops = Responses(self, rq.message_id, context_id, CMoveRSP, self._retrieve_converter(ts))
        return self._start(rq.message_id, context_id, encode_message(rq), data, ops)

    def get(
        self,
        sop_class_uid: str,
        identifier: Dataset | bytes,
        on_store: OnStore,
        *,
        priority: int = Priority.MEDIUM,
    ) -> Responses[RetrieveStatus]:
        """C-GET (PS3.4 C.4.3): the matching objects arrive as C-STORE-RQs on this
        association; each is answered with ``on_store(rq, data, transfer_syntax_uid)``.
        ``data`` is the data set as received: bytes, or the path of a spool file (deleted
        after ``on_store`` returns; ``os.replace`` it to keep it)."""
        context_id, ts, data = self._prepare(sop_class_uid, identifier)
        rq = CGetRQ(self._next_message_id(), sop_class_uid, priority)
        ops = Responses(
            self, rq.message_id, context_id, CGetRSP, self._retrieve_converter(ts), on_store
        )
        return self._start(rq.message_id, context_id, encode_message(rq), data, ops)

    def cancel(self, message_id: int) -> bool:
        """Send C-CANCEL-RQ for the outstanding operation ``message_id`` (PS3.7 §9.3.2.3),
        between two of its responses. False (nothing sent) if it is not outstanding or was
        already cancelled."""
        op = self._current
        if op is None or op.message_id != message_id or op.done or op.cancel_sent:
            return False
        command = encode_message(CCancelRQ(message_id))
        self._send_pdus(fragment_message(op.context_id, command, None, self._peer_limit()))
        op.cancel_sent = True
        return True

    def release(self) -> None:
        """Finish an outstanding operation (cancel + drain), then A-RELEASE."""
        op = self._current
        if op is not None and self._assoc is not None:
            try:
                op.drain()
            except BaseException:
                self.abort()
                raise
        super().release()

    def _close(self) -> None:
        super()._close()
        self._pdvs = deque()
        self._current = None

    def _prepare(self, sop_class_uid: str, identifier: Dataset | bytes) -> tuple[int, str, bytes]:
        if self._current is not None:
            self._current.drain()
        context_id = self._context_for(sop_class_uid, None)
        ts = self.accepted[context_id][1]
        data = identifier if isinstance(identifier, bytes) else encode_identifier(identifier, ts)
        return context_id, ts, data

    def _start(
        self, message_id: int, context_id: int, command: bytes, data: bytes, ops: Responses[T]
    ) -> Responses[T]:
        self._send_pdus(fragment_message(context_id, command, data, self._peer_limit()))
        self._current = ops
        return ops

    def _operation_finished(self, ops: Responses[Any]) -> None:
        if self._current is ops:
            self._current = None

    def _retrieve_converter(self, ts: str) -> Callable[[Message, bytes | None], RetrieveStatus]:
        def convert(msg: Message, raw: bytes | None) -> RetrieveStatus:
            assert isinstance(msg, CMoveRSP | CGetRSP)
            failed: tuple[str, ...] = ()
            if raw:
                value = self._decode(raw, ts).get(_FAILED_SOP_INSTANCE_UID_LIST)
                if value is not None and value.value:
                    items = value.value if value.VM > 1 else [value.value]
                    failed = tuple(str(uid) for uid in items)
            return RetrieveStatus(
                msg.status,
                msg.number_of_remaining_suboperations,
                msg.number_of_completed_suboperations,
                msg.number_of_failed_suboperations,
                msg.number_of_warning_suboperations,
                failed,
                msg.error_comment,
                msg,
            )

        return convert

    def _decode(self, raw: bytes, ts: str) -> Dataset:
        try:
            return decode_identifier(raw, ts)
        except ValueError as exc:
            self._protocol_abort(str(exc), exc)

    # -- receiving

    def _next_response(self, ops: Responses[T]) -> tuple[Message, bytes | None]:
        """The next response to ``ops``, serving the peer's requests that come first."""
        while True:
            cc, msg = self._next_command()
            field = cc.elements.get(Tag.COMMAND_FIELD)
            if isinstance(field, int) and not field & RESPONSE_BIT:
                if isinstance(msg, CStoreRQ) and ops.on_store is not None:
                    self._serve_store(cc, msg, ops.on_store)
                else:
                    self._refuse(cc, msg)
                continue
            responded = getattr(msg, "message_id_being_responded_to", None)
            if responded != ops.message_id or not isinstance(msg, ops.response_type):
                self._protocol_abort(
                    f"{type(msg).__name__} to message {responded} while waiting for a "
                    f"{ops.response_type.__name__} to message {ops.message_id}"
                )
            if not cc.has_data_set:
                return msg, None
            spool = _Spool(1 << 62, None)  # an Identifier: always in memory
            self._read_data_set(spool)
            data = spool.result()
            assert isinstance(data, bytes)
            return msg, data

    def _serve_store(self, cc: CommandComplete, rq: CStoreRQ, on_store: OnStore) -> None:
        """A C-GET sub-operation (PS3.4 C.4.3.3): receive the object, answer on its context."""
        if not cc.has_data_set:
            self._protocol_abort("C-STORE-RQ without a data set")
        spool = _Spool(self.spool_threshold_bytes, self.spool_dir)
        try:
            self._read_data_set(spool)
            accepted = self.accepted.get(cc.context_id)
            if accepted is None:
                status = int(Status.SOP_CLASS_NOT_SUPPORTED)
            else:
                try:
                    status = on_store(rq, spool.result(), accepted[1])
                except BaseException:
                    self.abort()
                    raise
        finally:
            spool.discard()
        rsp = CStoreRSP(
            message_id_being_responded_to=rq.message_id,
            status=status,
            affected_sop_class_uid=rq.affected_sop_class_uid,
            affected_sop_instance_uid=rq.affected_sop_instance_uid,
        )
        command = encode_message(rsp)
        self._send_pdus(fragment_message(cc.context_id, command, None, self._peer_limit()))

    def _refuse(self, cc: CommandComplete, msg: Message) -> None:
        if cc.has_data_set:
            self._read_data_set(None)
        if isinstance(msg, CCancelRQ):
            return  # nothing of ours to cancel, and a C-CANCEL has no response
        identity = RequestIdentity.from_elements(cc.elements)
        if identity is None:
            self._protocol_abort("request without Message ID")
        command = status_response(identity, Status.UNRECOGNIZED_OPERATION)
        self._send_pdus(fragment_message(cc.context_id, command, None, self._peer_limit()))

    def _next_command(self) -> tuple[CommandComplete, Message]:
        while True:
            for event in self._feed(self._next_pdv()):
                if isinstance(event, CommandComplete):
                    try:
                        return event, message_from_elements(event.elements)
                    except DimseError as exc:
                        self._protocol_abort(f"undecodable command: {exc}", exc)
                # A DataFragment cannot come here: data sets are always read to their end.

    def _read_data_set(self, sink: _Spool | None) -> None:
        while True:
            for event in self._feed(self._next_pdv()):
                if isinstance(event, DataFragment):
                    if sink is not None:
                        sink.write(event.data)
                    if event.is_last:
                        return
                else:
                    self._protocol_abort("command set inside a data set")

    def _feed(self, pdv: PDV) -> list[CommandComplete | DataFragment]:
        try:
            return self._assembler.feed(pdv)
        except DimseError as exc:
            self._protocol_abort(f"bad PDV sequence: {exc}", exc)

    def _next_pdv(self) -> PDV:
        while not self._pdvs:
            ev = self._next_event()
            if isinstance(ev, ReleaseRequested):
                self._protocol_abort("peer requested release with an operation outstanding")
            if isinstance(ev, PDataReceived):
                self._pdvs.extend(ev.pdvs)
        return self._pdvs.popleft()


__all__ = [
    "DEFAULT_GET_STORAGE_CLASSES",
    "NATIVE_TRANSFER_SYNTAXES",
    "FindResponse",
    "OnStore",
    "QRSCU",
    "Responses",
    "RetrieveStatus",
    "decode_identifier",
    "encode_identifier",
    "get_contexts",
    "qr_contexts",
    "scp_roles",
]
