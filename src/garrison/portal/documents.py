"""Documents and clinical notes: DocumentReference, reports with a presented form
(DiagnosticReport.presentedForm: imaging and pathology reports, notes) and Compositions.

A document is shown as its words when it has any (a plain-text attachment, an HTML one reduced
to text, a Composition's section narratives: stored markup is never rendered) and can be
downloaded as a file. Downloads are sent as attachments, with a sanitised file name, a content
type from a short allow-list (anything else is `application/octet-stream`) and `nosniff`, so a
document can never run as a page of the portal.

Reports are results: they follow the release policy (a held pathology report is not listed and
not counted). Documents and reports carry the viewing account's "new" marker; opening one marks
it seen.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from garrison import clock
from garrison.errors import Forbidden, GarrisonError, NotFound
from garrison.fhir.repository import Repository
from garrison.fhir.resource import ID_PATTERN, StoredResource
from garrison.portal.labs import audit_shown, record_patient, search_all
from garrison.portal.record_seen import NEW_FOR, NewMarkers
from garrison.portal.record_text import (
    Json,
    When,
    concept_text,
    first_when,
    markup_to_text,
    narrative_text,
    reference_display,
    reference_key,
)
from garrison.portal.release import ResultGate

Kind = Literal["document", "report", "summary"]
KINDS: dict[str, str] = {
    "document": "DocumentReference",
    "report": "DiagnosticReport",
    "summary": "Composition",
}
# Types a browser may be told a download is; anything else goes out as application/octet-stream.
SAFE_TYPES = frozenset(
    {
        "application/pdf",
        "text/plain",
        "image/png",
        "image/jpeg",
        "image/gif",
        "application/fhir+json",
        "application/json",
        "text/csv",
    }
)
_EXTENSIONS = {
    "application/pdf": ".pdf",
    "text/plain": ".txt",
    "text/html": ".html.txt",
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/gif": ".gif",
    "application/json": ".json",
    "application/fhir+json": ".json",
    "text/csv": ".csv",
}
MAX_INLINE_TEXT = 200_000  # characters of a text attachment shown in the page


@dataclass(frozen=True)
class AttachmentInfo:
    index: int
    title: str
    content_type: str
    size: str  # "12 KB"
    available: bool  # the file is in the record (not only a link elsewhere)


@dataclass(frozen=True)
class DocumentItem:
    kind: Kind
    id: str
    title: str
    category: str
    when: When | None
    author: str
    attachments: list[AttachmentInfo]
    new: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return (KINDS[self.kind], self.id)

    @property
    def href(self) -> str:
        suffix = "" if self.kind == "document" else f"?kind={self.kind}"
        return f"/portal/record/documents/{self.id}{suffix}"

    def file_href(self, index: int) -> str:
        suffix = "" if self.kind == "document" else f"?kind={self.kind}"
        return f"/portal/record/documents/{self.id}/files/{index}{suffix}"

    @property
    def date(self) -> str:
        return self.when.text if self.when is not None else ""


@dataclass(frozen=True)
class Section:
    title: str
    text: str


@dataclass(frozen=True)
class DocumentView:
    item: DocumentItem
    sections: list[Section]  # the document's words, when it has any
    unseen: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class DocumentFile:
    filename: str
    content_type: str  # what the browser is told (from SAFE_TYPES or octet-stream)
    data: bytes


def _size(attachment: Json) -> str:
    size = attachment.get("size")
    if not isinstance(size, int) or isinstance(size, bool):
        data = attachment.get("data")
        size = len(data) * 3 // 4 if isinstance(data, str) else None
    if size is None:
        return ""
    return f"{max(1, round(size / 1024))} KB" if size >= 1024 else f"{size} bytes"


def _attachments(resource: Json) -> list[Json]:
    if resource.get("resourceType") == "DocumentReference":
        return [
            c["attachment"]
            for c in resource.get("content") or ()
            if isinstance(c, dict) and isinstance(c.get("attachment"), dict)
        ]
    if resource.get("resourceType") == "DiagnosticReport":
        return [a for a in resource.get("presentedForm") or () if isinstance(a, dict)]
    return []


def _item(resource: Json, new: bool) -> DocumentItem:
    resource_type = resource.get("resourceType")
    kind: Kind = (
        "document"
        if resource_type == "DocumentReference"
        else ("report" if resource_type == "DiagnosticReport" else "summary")
    )
    attachments = [
        AttachmentInfo(
            index=i,
            title=str(a.get("title") or f"File {i + 1}"),
            content_type=str(a.get("contentType") or ""),
            size=_size(a),
            available=isinstance(a.get("data"), str) or _binary_id(a) is not None,
        )
        for i, a in enumerate(_attachments(resource))
    ]
    categories = resource.get("category")
    category = concept_text(categories[0]) if isinstance(categories, list) and categories else ""
    if kind == "document":
        title = str(resource.get("description") or "") or concept_text(resource.get("type"))
        when = first_when(resource.get("date"), (resource.get("context") or {}).get("period"))
        authors = resource.get("author") or []
    elif kind == "report":
        title = concept_text(resource.get("code"))
        when = first_when(
            resource.get("effectiveDateTime"), resource.get("effectivePeriod"), resource.get("issued")
        )
        authors = resource.get("resultsInterpreter") or resource.get("performer") or []
    else:
        title = str(resource.get("title") or "") or concept_text(resource.get("type"))
        when = first_when(resource.get("date"))
        authors = resource.get("author") or []
    author = ", ".join(reference_display(a) for a in authors if reference_display(a))
    return DocumentItem(
        kind=kind,
        id=str(resource.get("id")),
        title=title or "Document",
        category=category,
        when=when,
        author=author,
        attachments=attachments,
        new=new,
    )


def _shown_at(resource: Json, gate: ResultGate) -> datetime | None:
    if resource.get("resourceType") == "DiagnosticReport":
        return gate.released_at(resource)
    found = first_when(resource.get("date"), (resource.get("meta") or {}).get("lastUpdated"))
    return found.moment if found is not None else None


def _has_words(report: Json) -> bool:
    return bool(report.get("presentedForm")) or isinstance(report.get("conclusion"), str)


def document_items(repo: Repository, resources: Iterable[Json]) -> tuple[list[DocumentItem], bool]:
    """Items for documents, reports and summaries (newest first) and whether a report was held
    back by the release policy. Reports without words of their own (a lab panel) are left to the
    results pages."""
    candidates = [
        r
        for r in resources
        if r.get("status") not in ("entered-in-error", "superseded", "cancelled")
        and (r.get("resourceType") != "DiagnosticReport" or _has_words(r))
    ]
    gate = ResultGate.load(repo, candidates)
    shown = gate.filter(candidates)
    since = clock.now() - NEW_FOR
    released = {(str(r["resourceType"]), str(r["id"])): _shown_at(r, gate) for r in shown}
    recent = [k for k, at in released.items() if at is not None and at >= since]
    markers = NewMarkers.load(repo, recent)
    items = []
    for resource in shown:
        key = (str(resource["resourceType"]), str(resource["id"]))
        items.append(_item(resource, markers.is_new(key, released[key])))
    items.sort(key=lambda i: i.when.moment.timestamp() if i.when else 0.0, reverse=True)
    return items, gate.waiting


def documents(repo: Repository) -> tuple[list[DocumentItem], bool]:
    """Every document, report with words, and summary of the record, newest first."""
    patient = record_patient(repo)
    stored: list[StoredResource] = []
    for resource_type in KINDS.values():
        if repo.guard.allows("search", resource_type):
            stored.extend(search_all(repo, resource_type, [("patient", patient), ("_sort", "-date")]))
    items, waiting = document_items(repo, (s.parsed() for s in stored))
    shown = {i.key for i in items}
    audit_shown(repo, "documents", [s for s in stored if (s.resource_type, s.id) in shown])
    return items, waiting


def _read(repo: Repository, kind: str, document_id: str) -> Json:
    resource_type = KINDS.get(kind)
    if resource_type is None or not ID_PATTERN.match(document_id):
        raise NotFound("There is no such document in this record")
    stored = repo.read(resource_type, document_id)
    body = stored.parsed()
    if _patient_of(body) != record_patient(repo):
        raise NotFound("There is no such document in this record")
    if resource_type == "DiagnosticReport" and not ResultGate.load(repo, [body]).admits(body):
        raise NotFound("This report is waiting for your care team to review it")
    if body.get("status") == "entered-in-error":
        raise NotFound("There is no such document in this record")
    audit_shown(repo, "document", [stored])
    return body


def _patient_of(resource: Json) -> str | None:
    for element in ("subject", "patient"):
        key = reference_key(resource.get(element))
        if key is not None and key[0] == "Patient":
            return key[1]
    return None


def document(repo: Repository, document_id: str, kind: str = "document") -> DocumentView:
    """One document with its words; the page marks it seen (`unseen`)."""
    body = _read(repo, kind, document_id)
    items, _ = document_items(repo, [body])
    if not items:
        raise NotFound("There is no such document in this record")
    item = items[0]
    sections: list[Section] = []
    if kind == "summary":
        for section in body.get("section") or ():
            if isinstance(section, dict):
                text = narrative_text(section)
                if text:
                    sections.append(Section(str(section.get("title") or ""), text))
    if kind == "report" and isinstance(body.get("conclusion"), str):
        sections.append(Section("Conclusion", body["conclusion"]))
    for attachment in _attachments(body):
        text = _attachment_text(attachment)
        if text:
            sections.append(Section(str(attachment.get("title") or ""), text))
    if not sections:
        text = narrative_text(body)
        if text:
            sections.append(Section("", text))
    return DocumentView(item, sections, [item.key] if item.new else [])


def _attachment_text(attachment: Json) -> str:
    content_type = str(attachment.get("contentType") or "").split(";")[0].strip().lower()
    if content_type not in ("text/plain", "text/html") or not isinstance(attachment.get("data"), str):
        return ""
    try:
        raw = base64.b64decode(attachment["data"], validate=True)
    except (binascii.Error, ValueError):
        return ""
    text = raw.decode("utf-8", errors="replace")[:MAX_INLINE_TEXT]
    return markup_to_text(text) if content_type == "text/html" else text.strip()


def _binary_id(attachment: Json) -> str | None:
    url = attachment.get("url")
    if isinstance(url, str) and url.startswith("Binary/") and ID_PATTERN.match(url[len("Binary/") :]):
        return url[len("Binary/") :]
    return None


def document_file(repo: Repository, document_id: str, index: int, kind: str = "document") -> DocumentFile:
    """The bytes of one attachment, to download; NotFound when it is not in the record."""
    body = _read(repo, kind, document_id)
    attachments = _attachments(body)
    if not 0 <= index < len(attachments):
        raise NotFound("This document has no such file")
    attachment = attachments[index]
    declared = str(attachment.get("contentType") or "").split(";")[0].strip().lower()
    data: bytes | None = None
    if isinstance(attachment.get("data"), str):
        try:
            data = base64.b64decode(attachment["data"], validate=True)
        except (binascii.Error, ValueError):
            data = None
    elif (binary_id := _binary_id(attachment)) is not None:
        try:
            binary = repo.read("Binary", binary_id).parsed()
            data = base64.b64decode(str(binary.get("data") or ""), validate=True)
            declared = declared or str(binary.get("contentType") or "").lower()
        except (GarrisonError, binascii.Error, ValueError):
            data = None  # not readable by this caller (Forbidden), gone, or malformed
    if data is None:
        raise NotFound("This file is not stored in your record; ask your care team for a copy")
    content_type = declared if declared in SAFE_TYPES else "application/octet-stream"
    title = str(attachment.get("title") or "") or _item(body, False).title
    return DocumentFile(safe_filename(title, declared), content_type, data)


def safe_filename(title: str, content_type: str) -> str:
    """A file name safe on every system: letters, digits, spaces, dots, dashes and underscores
    (ASCII), no leading dots, at most 80 characters, with an extension for its type."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii")
    cleaned = re.sub(r"[^A-Za-z0-9 ._-]+", "_", ascii_title).strip(" ._")
    cleaned = re.sub(r"\.{2,}", ".", cleaned)  # no ".." anywhere
    cleaned = re.sub(r"[ _]*_[ _]*", "_", cleaned)[:80].strip(" ._") or "document"
    extension = _EXTENSIONS.get(content_type, ".bin")
    if not cleaned.lower().endswith(extension):
        cleaned += extension
    return cleaned


def require_patient_record(repo: Repository) -> None:
    """Refuse (403) a caller whose access does not include documents (a scheduling-only grant)."""
    if not repo.guard.allows("read", "DocumentReference"):
        raise Forbidden("This access does not include documents")
