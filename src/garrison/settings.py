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

    # Audit trail (garrison.audit): checkpoint signing key and the anchor file outside the database.
    audit_signing_key_file: Path | None = Field(
        default=None, description="Ed25519 PEM key; defaults to data_dir/audit-signing-key.pem."
    )
    audit_anchor_file: Path | None = Field(
        default=None, description="Signed checkpoints, one JSON line each; data_dir/audit-anchors.jsonl."
    )

    # OAuth 2 / SMART authorization server (garrison.oauth). Times in seconds.
    oauth_issuer: str | None = Field(
        default=None, description="Token issuer; defaults to the origin (scheme://host:port) of base_url."
    )
    oauth_signing_alg: str = Field(default="RS256", pattern="^(RS256|ES384)$")
    oauth_access_token_ttl: int = Field(default=300, ge=10, le=300)  # checklist A10: at most 5 minutes
    oauth_refresh_token_ttl: int = Field(default=90 * 24 * 3600, ge=60)
    oauth_code_ttl: int = Field(default=60, ge=5, le=600)
    oauth_consent_ttl: int = Field(default=900, ge=60)  # how long a consent page may stay open
    oauth_key_grace: int = Field(default=3600, ge=0)  # a retired signing key is honoured this long
    oauth_jwks_max_age: int = Field(default=300, ge=0)  # Cache-Control max-age of /oauth/jwks
    oauth_clock_leeway: int = Field(default=60, ge=0, le=60)
    oauth_assertion_max_lifetime: int = Field(default=300, ge=10, le=300)  # SMART: exp ≤ 5 min ahead
    oauth_launch_ttl: int = Field(default=600, ge=10)  # an EHR launch id stays usable this long
    oauth_rate_per_address: int = Field(default=300, ge=1)  # token/revoke/introspect per minute

    # Identity and sign-in (garrison.identity, garrison.web.signin): checklist A2, A6, A8, A9.
    session_idle_minutes_staff: int = Field(default=15, ge=1, le=15)  # STIG V-222389: at most 15
    session_idle_minutes_patient: int = Field(default=30, ge=1)
    session_lifetime_hours_staff: float = Field(default=12, gt=0)
    session_lifetime_hours_patient: float = Field(default=4, gt=0)
    lockout_failures: int = Field(default=3, ge=1)  # STIG V-222432: 3 failures in 15 minutes
    lockout_window_minutes: int = Field(default=15, ge=1)
    lockout_minutes: int = Field(default=15, ge=1)
    cookie_secure: bool = True  # Secure cookies; browsers accept them on http://127.0.0.1 too
    signin_rate_per_address: int = Field(default=30, ge=1)  # sign-in POSTs per window per client
    signin_rate_per_username: int = Field(default=10, ge=1)
    signin_rate_window_seconds: int = Field(default=60, ge=1)
    # Peers (addresses or CIDR) whose X-Forwarded-For and client-certificate headers are believed.
    trusted_proxies: list[str] = Field(default_factory=list)
    client_cert_header: str = "X-SSL-Client-Cert"  # nginx: $ssl_client_escaped_cert
    smartcard_trust_roots: Path | None = None  # PEM file or directory of DoD root certificates
    smartcard_intermediates: Path | None = None  # PEM file or directory of issuing CAs
    smartcard_crls: Path | None = None  # CRL file or directory (PEM or DER), refreshed by mtime

    # HTTPS for `garrison serve` (checklist C1); --tls-cert / --tls-key override these.
    tls_cert_file: Path | None = None  # PEM certificate chain
    tls_key_file: Path | None = None  # PEM private key (None: it is in tls_cert_file)

    # Break-the-glass (garrison.fhir.authz.break_glass): checklist P7. At most 240 minutes.
    break_glass_minutes: int = Field(default=60, ge=1, le=240)

    # Notifications (garrison.notifications): email/SMS leave through an outbox. "file" writes them
    # to data_dir/outbox.jsonl (no mail server in the embedded default); "log" only logs that they went.
    outbox_sender: str = Field(default="file", pattern="^(file|log)$")
    outbox_interval_seconds: float = Field(default=10.0, gt=0)  # how often the server delivers

    # Portal result release (garrison.portal.release): results reach the portal at once, except
    # the sensitive groups named here: rule -> days after the result is issued, or null for "until
    # a clinician releases it". Rules: hiv, genetic, pathology. {} releases everything at once.
    portal_result_holds: dict[str, int | None] = Field(
        default_factory=lambda: {"hiv": 3, "genetic": None, "pathology": 3}
    )

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'garrison.sqlite3').resolve()}"
