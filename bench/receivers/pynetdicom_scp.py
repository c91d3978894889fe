"""A minimal pynetdicom Storage SCP, the baseline a Python developer would write first.

    python -m bench.receivers.pynetdicom_scp --port 11112 --out DIR [--ae PACS]

Every storage SOP Class pynetdicom knows, in every transfer syntax it knows, plus
Verification. Each C-STORE writes the data set exactly as received, behind a File Meta group
(``Event.encoded_dataset``: no decoding), to ``DIR/<SOP Instance UID>.dcm`` and answers
Success. pynetdicom's other settings are its defaults (16 KB maximum PDU, a thread per
association), as its users get them. ``PynetdicomReceiver`` runs it for the harness.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bench.receivers.appliance import REPO, venv_python
from bench.receivers.base import Receiver


def serve(port: int, out: Path, ae_title: str) -> None:
    from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    ae = AE(ae_title)
    for context in AllStoragePresentationContexts:
        if context.abstract_syntax is not None:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(Verification)
    out.mkdir(parents=True, exist_ok=True)

    def on_store(event: Any) -> int:
        uid = event.request.AffectedSOPInstanceUID
        (out / f"{uid}.dcm").write_bytes(event.encoded_dataset())
        return 0x0000

    ae.start_server(("127.0.0.1", port), block=True, evt_handlers=[(evt.EVT_C_STORE, on_store)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--ae", default="PACS")
    args = ap.parse_args(argv)
    serve(args.port, args.out, args.ae)
    return 0


class PynetdicomReceiver(Receiver):
    family = "pynetdicom"

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.cwd = REPO
        self.python = venv_python()

    def available(self) -> str | None:
        try:
            import pynetdicom  # noqa: F401
        except ImportError:
            return "pynetdicom not installed (pip install pynetdicom)"
        return None

    def command(self) -> list[str]:
        return [self.python, "-m", "bench.receivers.pynetdicom_scp", "--port", str(self.port),
                "--out", str(self.store), "--ae", self.called_ae]

    def describe(self) -> dict[str, object]:
        import pynetdicom

        return {"family": self.family, "version": pynetdicom.__version__}


if __name__ == "__main__":
    sys.exit(main())
