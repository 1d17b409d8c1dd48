"""Files attached to secure messages: what is accepted, how names are cleaned, where bytes live.

Accepted: PDF, PNG, JPEG and plain text, recognised by their first bytes ("magic numbers"), not
by the name or the browser's declared type, which anyone can fake; the name's extension must
agree with the contents. At most `MAX_FILES` files of `MAX_FILE_BYTES` each per message.

Each file is stored as a FHIR Binary (https://hl7.org/fhir/R4/binary.html) whose
`securityContext` is the message's Communication, and the Communication's
`payload.contentAttachment` carries the title, type, size and `url: Binary/<id>`.
Binary is outside the Patient compartment, so the access policy grants it to no patient or staff
role: the messaging code writes and reads it with a narrow system context, and only after the
caller's own Repository has shown that the caller may see the Communication it belongs to.
"""

from __future__ import annotations

import base64
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from garrison.clock import now
from garrison.errors import BadRequest, GarrisonError, NotFound
from garrison.fhir.access import AccessContext
from garrison.fhir.repository import Repository
from garrison.fhir.resource import format_instant
from garrison.messaging.model import AttachmentInfo

MAX_FILES = 3
MAX_FILE_BYTES = 5 * 1024 * 1024
MAX_TITLE = 100
ACCEPTED_KINDS = "PDF, PNG, JPEG or plain text"
# Content type -> the extensions a file of that type may carry (the first is added when missing).
EXTENSIONS: dict[str, tuple[str, ...]] = {
    "application/pdf": (".pdf",),
    "image/png": (".png",),
    "image/jpeg": (".jpg", ".jpeg"),
    "text/plain": (".txt", ".text", ".log", ".csv", ".md"),
}
_KIND_NAME = {
    "application/pdf": "a PDF",
    "image/png": "a PNG image",
    "image/jpeg": "a JPEG image",
    "text/plain": "a plain text file",
}
_UNSAFE = re.compile(r"[^A-Za-z0-9._()\- ]+")
_RUNS = re.compile(r"[ _]{2,}")
# Names Windows reserves for devices; a download saved under one of them misbehaves there.
_RESERVED = frozenset(
    {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}
)
_TEXT_CONTROLS_ALLOWED = frozenset("\t\n\r\f")
_JOB = "messaging-attachments"


@dataclass(frozen=True, slots=True)
class Upload:
    """A file as the browser sent it: the claimed name and the bytes."""

    filename: str
    data: bytes


@dataclass(frozen=True, slots=True)
class CheckedFile:
    title: str  # the sanitised file name
    content_type: str  # from the contents, one of EXTENSIONS
    data: bytes


@dataclass(frozen=True, slots=True)
class AttachmentFile:
    """A stored attachment, ready to download."""

    title: str
    content_type: str
    data: bytes


def sniff(data: bytes) -> str | None:
    """The accepted type the bytes are, or None. Signatures: PDF `%PDF-` (ISO 32000-1 §7.5.2),
    PNG's 8-byte signature (RFC 2083 §3.1), JPEG's SOI marker FF D8 FF; plain text is UTF-8
    without NUL or other control characters than tab, newlines and form feed."""
    if data.startswith(b"%PDF-"):
        return "application/pdf"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if any(unicodedata.category(ch) == "Cc" and ch not in _TEXT_CONTROLS_ALLOWED for ch in text):
        return None
    return "text/plain"


def sanitise_filename(name: str) -> str:
    """A file name safe to store, show and offer for download: no directories, no control or
    invisible characters, ASCII letters, digits and `._()- ` only (accents are dropped, other
    characters become `_`), no leading dot, no reserved device name, at most MAX_TITLE
    characters with the extension kept. Never empty ("attachment")."""
    base = re.split(r"[/\\]", name)[-1]
    decomposed = unicodedata.normalize("NFKD", base)
    plain = "".join(
        ch
        for ch in decomposed
        if not unicodedata.combining(ch) and not unicodedata.category(ch).startswith("C")
    )
    cleaned = _RUNS.sub("_", _UNSAFE.sub("_", plain)).strip(" ._")
    stem, dot, extension = cleaned.rpartition(".")
    if not dot:
        stem, extension = cleaned, ""
    stem = stem.rstrip(" ._") or "attachment"
    extension = extension.lower()[:10]
    if stem.split(".")[0].lower() in _RESERVED:
        stem = f"_{stem}"
    room = MAX_TITLE - (len(extension) + 1 if extension else 0)
    stem = stem[:room].rstrip(" ._") or "attachment"
    return f"{stem}.{extension}" if extension else stem


def check_uploads(uploads: list[Upload]) -> list[CheckedFile]:
    """The files, checked and named safely; BadRequest with a plain message naming the first
    file that breaks a rule (nothing is stored unless every file passes)."""
    if len(uploads) > MAX_FILES:
        raise BadRequest(f"You can attach up to {MAX_FILES} files to one message.")
    checked: list[CheckedFile] = []
    for upload in uploads:
        title = sanitise_filename(upload.filename)
        if not upload.data:
            raise BadRequest(f"{title} is empty.")
        if len(upload.data) > MAX_FILE_BYTES:
            raise BadRequest(f"{title} is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB.")
        content_type = sniff(upload.data)
        if content_type is None:
            raise BadRequest(f"{title} is not a file type you can attach. Attach {ACCEPTED_KINDS} files.")
        allowed = EXTENSIONS[content_type]
        _, dot, extension = title.rpartition(".")
        if not dot:
            title = f"{title}{allowed[0]}"
        elif f".{extension}" not in allowed:
            raise BadRequest(
                f"{title} does not contain what its name says: it is {_KIND_NAME[content_type]}. "
                f"Rename it to end in {allowed[0]}, or attach the right file."
            )
        checked.append(CheckedFile(title, content_type, upload.data))
    return checked


def store(
    repo: Repository,
    communication_id: str,
    files: list[CheckedFile],
    *,
    security: list[dict[str, str]] | None = None,
) -> list[dict[str, Any]]:
    """Write each file as a Binary belonging to `communication_id` (with the message's security
    labels, if any); returns the Attachment elements for the Communication's payload. The caller
    writes that Communication through its own Repository in the same transaction, so if the
    caller may not, nothing is kept."""
    if not files:
        return []
    # The narrow system step: no patient or staff role may create a Binary (see module doc).
    system = Repository(
        repo.connection, repo.definitions, repo.settings, AccessContext.system(_JOB, audited=True)
    )
    created = format_instant(now())
    attachments: list[dict[str, Any]] = []
    for file in files:
        body: dict[str, Any] = {
            "resourceType": "Binary",
            "contentType": file.content_type,
            "securityContext": {"reference": f"Communication/{communication_id}"},
            "data": base64.b64encode(file.data).decode("ascii"),
        }
        if security:
            body["meta"] = {"security": security}
        binary = system.create(body).stored
        attachments.append(
            {
                "contentType": file.content_type,
                "url": f"Binary/{binary.id}",
                "size": len(file.data),
                # No Attachment.hash: R4 defines it as SHA-1, which Garrison does not use (C2).
                "title": file.title,
                "creation": created,
            }
        )
    repo.audit.extend(system.audit)
    return attachments


def attachments_of(communication: dict[str, Any]) -> list[AttachmentInfo]:
    found: list[AttachmentInfo] = []
    for item in _attachment_elements(communication):
        found.append(
            AttachmentInfo(
                index=len(found),
                title=str(item.get("title") or "attachment"),
                content_type=str(item.get("contentType") or "application/octet-stream"),
                size=int(item.get("size") or 0),
            )
        )
    return found


def load(repo: Repository, communication: dict[str, Any], index: int) -> AttachmentFile:
    """The bytes of attachment `index` of a Communication the caller has already read through
    its own Repository (that read is the authorisation)."""
    elements = _attachment_elements(communication)
    if not 0 <= index < len(elements):
        raise NotFound("There is no such attachment")
    element = elements[index]
    url = str(element.get("url", ""))
    if not url.startswith("Binary/"):
        raise NotFound("There is no such attachment")
    system = Repository(repo.connection, repo.definitions, repo.settings, AccessContext.system(_JOB))
    try:
        binary = system.read("Binary", url.removeprefix("Binary/")).parsed()
    except GarrisonError as error:
        raise NotFound("The attachment is no longer available") from error
    # Defence in depth: the Binary must say it belongs to this very message.
    owner = (binary.get("securityContext") or {}).get("reference")
    if owner != f"Communication/{communication.get('id')}":
        raise NotFound("There is no such attachment")
    content_type = str(binary.get("contentType") or "")
    if content_type not in EXTENSIONS:
        content_type = "application/octet-stream"
    data = base64.b64decode(str(binary.get("data") or ""))
    return AttachmentFile(sanitise_filename(str(element.get("title") or "attachment")), content_type, data)


def _attachment_elements(communication: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        p["contentAttachment"]
        for p in communication.get("payload") or []
        if isinstance(p.get("contentAttachment"), dict)
    ]
