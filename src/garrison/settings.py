"""One typed settings object, read once at start-up and passed explicitly."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

_DEFINITIONS = Path("shared") / "testdata" / "fhir-r4" / "definitions"


def _default_definitions_dir() -> Path:
    """HL7's R4 definitions are read from ../shared (never copied into the repository).

    The checkout sits beside `shared/` in development and in CI; look beside the source tree
    first, then beside the working directory.
    """
    candidates = [Path(__file__).resolve().parents[2].parent, Path.cwd().parent, Path.cwd()]
    for root in candidates:
        if (root / _DEFINITIONS).is_dir():
            return root / _DEFINITIONS
    return candidates[0] / _DEFINITIONS


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GARRISON_", extra="ignore")

    data_dir: Path = Field(default=Path("var"), description="Where the embedded database lives.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; defaults to SQLite in data_dir."
    )
    definitions_dir: Path = Field(default_factory=_default_definitions_dir)
    base_url: str = Field(default="http://127.0.0.1:8000/fhir", description="Public FHIR base URL.")

    # Limits that protect the server from expensive or hostile requests.
    max_body_bytes: int = 32 * 1024 * 1024
    default_page_size: int = 20
    max_page_size: int = 1000
    max_chain_depth: int = 3
    max_include_depth: int = 3
    max_bundle_entries: int = 20_000

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'garrison.sqlite3').resolve()}"
