"""Cheap checks before any parsing: is this a readable PDF with a text layer?

Each failure has a reason code (for quarantine records and telemetry) and a message that names the
file and what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pypdfium2


class UnreadableDocument(Exception):
    """A document the pipeline cannot read; nothing of it is written anywhere."""

    def __init__(self, path: Path, reason: str, detail: str) -> None:
        super().__init__(f"{path.name}: {detail}")
        self.path = path
        self.reason = reason  # empty | not_pdf | encrypted | wrong_password | corrupt | no_pages | no_text_layer
        self.detail = detail


@dataclass(frozen=True)
class Triage:
    pages: int
    text_chars: int


def triage(path: Path, password: str | None = None) -> Triage:
    if not path.is_file():
        raise UnreadableDocument(path, "missing", "no such file")
    with path.open("rb") as handle:
        head = handle.read(1024)
    if not head:
        raise UnreadableDocument(path, "empty", "the file is empty (0 bytes)")
    if b"%PDF-" not in head:
        shown = head[:8].decode("latin-1").encode("unicode_escape").decode()
        raise UnreadableDocument(path, "not_pdf", f"not a PDF: it starts with {shown!r}, not %PDF-")
    try:
        document = pypdfium2.PdfDocument(str(path), password=password)
    except pypdfium2.PdfiumError as error:
        message = str(error)
        if "password" in message.lower():
            if password:
                raise UnreadableDocument(
                    path, "wrong_password", "encrypted, and the configured password does not open it"
                ) from error
            raise UnreadableDocument(
                path, "encrypted", "encrypted: a password is needed (configure one for this file or sender)"
            ) from error
        raise UnreadableDocument(path, "corrupt", f"corrupt or unreadable PDF ({message})") from error
    try:
        pages = len(document)
        if pages == 0:
            raise UnreadableDocument(path, "no_pages", "the PDF has no pages")
        chars = 0
        for index in range(pages):
            text_page = document[index].get_textpage()
            chars += len(text_page.get_text_range().strip())
            text_page.close()
        if chars == 0:
            raise UnreadableDocument(
                path, "no_text_layer", f"no text layer on any of its {pages} page(s): a scan, OCR is needed"
            )
        return Triage(pages=pages, text_chars=chars)
    finally:
        document.close()
