"""Banned cryptography in src/garrison, found by reading the syntax tree (checklist C2, Z8, C1).

C2 (170.210(a)(2), FIPS 140-2 Annex A / 140-3) allows only approved algorithms, and secrets must
come from a CSPRNG. The scanner resolves every name through the module's imports (so
`import hashlib as h; h.md5()` and `from hashlib import md5` are both caught) and fails on:

- MD5 or SHA-1, in any use (hashlib, hmac/pbkdf2 hash names, cryptography's hashes);
- the `random` module anywhere in identity/, oauth/, audit/, callers.py, web/, fhir/authz/ or
  privacy/ (secrets come from `secrets`: ASVS 11.5.1);
- DES, 3DES, RC4 (and the other ciphers cryptography moved to `decrepit`) and ECB mode;
- JWS/JWT: "none" or an HS* algorithm in an algorithm list, an `alg` header or an allow-list
  constant; verifying without an explicit `algorithms=` allow-list (Z8; RFC 8725 §3.1);
  PyJWT's `verify_signature: False`;
- TLS: `verify=False`, `check_hostname = False`, unverified contexts, SSLv3/TLS 1.0/1.1 (C1).

The snippet tables at the end prove that each rule fires (and stays quiet on correct code).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "garrison"
# Where a `random` import means a guessable secret (relative to src/garrison): every place that
# mints or checks credentials, tokens, grants or consents. (Synthetic data in population/ and
# empi/synthetic.py is meant to be reproducible and uses seeded `random.Random`.)
SECRET_SCOPES = ("identity/", "oauth/", "audit/", "callers.py", "web/", "fhir/authz/", "privacy/")

WEAK_HASH_NAMES = frozenset({"md5", "sha1", "sha-1", "md4", "md5-sha1"})
BANNED_NAMES = {
    "hashlib.md5": "MD5",
    "hashlib.sha1": "SHA-1",
    "cryptography.hazmat.primitives.hashes.MD5": "MD5",
    "cryptography.hazmat.primitives.hashes.SHA1": "SHA-1",
    "cryptography.hazmat.primitives.ciphers.modes.ECB": "ECB mode",
    "ssl.PROTOCOL_SSLv2": "SSLv2",
    "ssl.PROTOCOL_SSLv3": "SSLv3",
    "ssl.PROTOCOL_TLSv1": "TLS 1.0",
    "ssl.PROTOCOL_TLSv1_1": "TLS 1.1",
    "ssl.TLSVersion.SSLv3": "SSLv3",
    "ssl.TLSVersion.TLSv1": "TLS 1.0",
    "ssl.TLSVersion.TLSv1_1": "TLS 1.1",
    "ssl._create_unverified_context": "an unverified TLS context",
}
# Last component of a name from cryptography / PyCryptodome that is a banned cipher or mode.
BANNED_CIPHERS = frozenset(
    {"DES", "DES3", "TripleDES", "ARC4", "RC4", "Blowfish", "CAST5", "IDEA", "SEED", "ECB", "MODE_ECB"}
)
CRYPTO_LIBRARIES = ("cryptography.", "Crypto.", "Cryptodome.")
# JWS/JWT verification entry points that must be given `algorithms=`.
JWS_VERIFIERS = frozenset(
    {
        "joserfc.jws.deserialize_compact",
        "joserfc.jws.deserialize_json",
        "joserfc.jwt.decode",
        "jwt.decode",  # PyJWT
        "jwt.decode_complete",
        "jose.jwt.decode",  # python-jose
        "jose.jws.verify",
    }
)
ALG_KEYWORDS = frozenset({"alg", "algorithm", "algorithms"})
_HS_ALG = re.compile(r"^HS\d+$", re.IGNORECASE)


def banned_alg(value: object) -> bool:
    return isinstance(value, str) and (value.strip().lower() == "none" or bool(_HS_ALG.match(value.strip())))


@dataclass(frozen=True, order=True)
class Finding:
    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def string_constants(node: ast.AST) -> Iterator[str]:
    """str constants of a literal, or of a list/tuple/set/frozenset(...) literal of them."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, ast.List | ast.Tuple | ast.Set):
        for element in node.elts:
            yield from string_constants(element)
    elif (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("frozenset", "set", "tuple", "list")
        and node.args
    ):
        yield from string_constants(node.args[0])


class CryptoScanner(ast.NodeVisitor):
    """One module's findings. `secret_scope`: the module must not use `random`."""

    def __init__(self, path: str, *, secret_scope: bool) -> None:
        self.path = path
        self.secret_scope = secret_scope
        self.aliases: dict[str, str] = {}  # local name -> fully qualified name
        self.findings: list[Finding] = []

    def report(self, node: ast.AST, message: str) -> None:
        self.findings.append(Finding(self.path, getattr(node, "lineno", 0), message))

    # ------------------------------------------------------------------------ name resolution

    def qualified(self, node: ast.AST) -> str | None:
        if isinstance(node, ast.Name):
            return self.aliases.get(node.id)
        if isinstance(node, ast.Attribute):
            base = self.qualified(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    def check_name(self, node: ast.AST, name: str) -> None:
        if name in BANNED_NAMES:
            self.report(node, f"{name}: {BANNED_NAMES[name]} is not allowed")
        elif name.startswith("cryptography.hazmat.decrepit"):
            self.report(node, f"{name}: cryptography's decrepit (non-approved) algorithms")
        elif name.startswith(CRYPTO_LIBRARIES) and name.rsplit(".", 1)[-1] in BANNED_CIPHERS:
            self.report(node, f"{name}: DES/3DES/RC4/ECB and other non-approved ciphers are banned")
        if self.secret_scope and (name == "random" or name.startswith("random.")):
            self.report(node, f"{name}: secrets must come from `secrets`, not `random`")

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.asname:
                self.aliases[alias.asname] = alias.name
            else:
                top = alias.name.split(".")[0]
                self.aliases[top] = top
            self.check_name(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level or not node.module:
            return  # relative: Garrison's own modules
        for alias in node.names:
            name = f"{node.module}.{alias.name}"
            self.aliases[alias.asname or alias.name] = name
            self.check_name(node, name)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        name = self.qualified(node)
        if name is not None:
            self.check_name(node, name)
        if node.attr == "MODE_ECB":  # PyCryptodome, whatever the module was imported as
            self.report(node, "ECB mode is banned")
        self.generic_visit(node)

    # --------------------------------------------------------------------------------- calls

    def visit_Call(self, node: ast.Call) -> None:
        name = self.qualified(node.func)
        if name in ("hashlib.new", "hashlib.pbkdf2_hmac", "hmac.new", "hmac.digest"):
            values = [
                *node.args,
                *(k.value for k in node.keywords if k.arg in ("name", "digestmod", "hash_name")),
            ]
            for value in values:
                for text in string_constants(value):
                    if text.lower() in WEAK_HASH_NAMES:
                        self.report(node, f"{name}({text!r}): MD5/SHA-1 are not allowed")
        if name in JWS_VERIFIERS and not any(k.arg == "algorithms" for k in node.keywords):
            self.report(node, f"{name} without an explicit algorithms= allow-list")
        for keyword in node.keywords:
            if keyword.arg in ALG_KEYWORDS:
                for text in string_constants(keyword.value):
                    if banned_alg(text):
                        self.report(node, f"{keyword.arg}={text!r}: JWS alg none/HS* is not accepted")
            if (
                keyword.arg == "verify"
                and isinstance(keyword.value, ast.Constant)
                and keyword.value.value is False
            ):
                self.report(node, "verify=False disables certificate verification")
        self.generic_visit(node)

    # ----------------------------------------------------------------------- literals, names

    def visit_Dict(self, node: ast.Dict) -> None:
        for key, value in zip(node.keys, node.values, strict=True):
            if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
                continue
            if key.value in ALG_KEYWORDS:
                for text in string_constants(value):
                    if banned_alg(text):
                        self.report(node, f'"{key.value}": {text!r}: JWS alg none/HS* is not accepted')
            if key.value == "verify_signature" and isinstance(value, ast.Constant) and value.value is False:
                self.report(node, "verify_signature: False accepts unsigned tokens")
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        self.check_assignment(node.targets, node.value, node)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.check_assignment([node.target], node.value, node)
        self.generic_visit(node)

    def check_assignment(self, targets: list[ast.expr], value: ast.expr, node: ast.AST) -> None:
        for target in targets:
            name = target.id if isinstance(target, ast.Name) else getattr(target, "attr", "")
            if re.search(r"alg", name, re.IGNORECASE):
                for text in string_constants(value):
                    if banned_alg(text):
                        self.report(node, f"{name} holds {text!r}: JWS alg none/HS* is not accepted")
            if name == "check_hostname" and isinstance(value, ast.Constant) and value.value is False:
                self.report(node, "check_hostname = False disables certificate verification")


def scan_source(source: str, path: str = "<snippet>", *, secret_scope: bool = False) -> list[Finding]:
    scanner = CryptoScanner(path, secret_scope=secret_scope)
    scanner.visit(ast.parse(source))
    return sorted(scanner.findings)


def source_files() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def in_secret_scope(relative: str) -> bool:
    return any(relative == scope or relative.startswith(scope) for scope in SECRET_SCOPES)


def test_src_has_no_banned_cryptography() -> None:  # checklist C2 (and Z8, C1)
    findings: list[Finding] = []
    for path in source_files():
        relative = path.relative_to(SRC).as_posix()
        findings += scan_source(path.read_text(), relative, secret_scope=in_secret_scope(relative))
    assert not findings, "\n".join(map(str, findings))


def test_the_scan_covers_the_tree_and_the_secret_scopes_exist() -> None:
    """A rename must not make the secret-scope rule silently vacuous."""
    files = [p.relative_to(SRC).as_posix() for p in source_files()]
    assert len(files) > 100
    for scope in SECRET_SCOPES:
        assert sum(in_secret_scope(f) and f.startswith(scope) for f in files) >= 1, scope


# Each snippet must produce at least one finding; `secret` marks code inside the secret scopes.
BAD = {
    "hashlib.md5": "import hashlib\nhashlib.md5(b'x')",
    "hashlib.sha1 as a reference": "import hashlib\nf = hashlib.sha1",
    "aliased hashlib": "import hashlib as h\nh.sha1(b'x').hexdigest()",
    "from hashlib import md5": "from hashlib import md5\nmd5(b'x')",
    "hashlib.new('md5')": "import hashlib\nhashlib.new('MD5', b'x')",
    "hmac with sha1 by name": "import hmac\nhmac.new(b'k', b'm', digestmod='sha1')",
    "hmac with hashlib.sha1": "import hashlib, hmac\nhmac.new(b'k', b'm', hashlib.sha1)",
    "pbkdf2 with sha1": "import hashlib\nhashlib.pbkdf2_hmac('sha1', b'p', b's', 1000)",
    "cryptography SHA1": "from cryptography.hazmat.primitives import hashes\nhashes.SHA1()",
    "cryptography MD5 imported": "from cryptography.hazmat.primitives.hashes import MD5",
    "3DES": "from cryptography.hazmat.primitives.ciphers import algorithms\nalgorithms.TripleDES(k)",
    "RC4": "from cryptography.hazmat.primitives.ciphers.algorithms import ARC4",
    "decrepit": "from cryptography.hazmat.decrepit.ciphers.algorithms import Blowfish",
    "ECB": "from cryptography.hazmat.primitives.ciphers import modes\nmodes.ECB()",
    "PyCryptodome DES": "from Crypto.Cipher import DES",
    "PyCryptodome ECB": "from Crypto.Cipher import AES\nAES.new(k, AES.MODE_ECB)",
    "jwt alg none": "import jwt\njwt.decode(t, k, algorithms=['none'])",
    "jwt HS256": "import jwt\njwt.decode(t, k, algorithms=['RS256', 'HS256'])",
    "no algorithm allow-list (PyJWT)": "import jwt\njwt.decode(t, k)",
    "no algorithm allow-list (joserfc)": "from joserfc import jws\njws.deserialize_compact(t, k)",
    "verify_signature off": "jwt.decode(t, options={'verify_signature': False}, algorithms=['RS256'])",
    "alg header none": "header = {'alg': 'none', 'typ': 'JWT'}",
    "allow-list constant": "ACCEPTED_ALGS = ('RS256', 'HS512')",
    "annotated allow-list": "SIGNING_ALGORITHMS: frozenset[str] = frozenset({'ES384', 'HS384'})",
    "verify=False": "import httpx\nhttpx.get(url, verify=False)",
    "check_hostname off": "import ssl\nctx = ssl.create_default_context()\nctx.check_hostname = False",
    "unverified context": "import ssl\nssl._create_unverified_context()",
    "TLS 1.0 protocol": "import ssl\nssl.SSLContext(ssl.PROTOCOL_TLSv1)",
    "TLS 1.1 minimum": "import ssl\nctx.minimum_version = ssl.TLSVersion.TLSv1_1",
}
BAD_IN_SECRET_SCOPE = {
    "import random": "import random\ntoken = random.getrandbits(128)",
    "from random import": "from random import choice\ncode = ''.join(choice('0123456789') for _ in range(6))",
    "random.SystemRandom: use secrets": "import random as r\nr.SystemRandom()",
}
GOOD = {
    "sha256": "import hashlib\nhashlib.sha256(b'x')",
    "hmac sha256": "import hashlib, hmac\nhmac.new(b'k', b'm', hashlib.sha256)",
    "jws with allow-list": "from joserfc import jws\njws.deserialize_compact(t, k, algorithms=['RS256'])",
    "allow-list of asymmetric algs": "SIGNING_ALGS = ('RS256', 'ES384')",
    "_total=none is not a JWS alg": "query = [('_total', 'none')]",
    "AES-GCM": "from cryptography.hazmat.primitives.ciphers.aead import AESGCM\nAESGCM(k)",
    "secrets": "import secrets\nsecrets.token_urlsafe(32)",
    "random outside the secret scopes": "import random\nrandom.Random('seed').random()",
    "a local name that looks like a module": "md5 = 1\nprint(md5)",
    "TLS 1.2 floor": "import ssl\nctx.minimum_version = ssl.TLSVersion.TLSv1_2",
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_the_scanner_catches(name: str) -> None:  # checklist C2: the scan is able to fail
    assert scan_source(BAD[name]), name


@pytest.mark.parametrize("name", sorted(BAD_IN_SECRET_SCOPE))
def test_the_scanner_catches_random_in_the_secret_scopes(name: str) -> None:  # checklist C2
    assert scan_source(BAD_IN_SECRET_SCOPE[name], "oauth/x.py", secret_scope=True), name
    assert not scan_source(BAD_IN_SECRET_SCOPE[name], "population/x.py", secret_scope=False), name


@pytest.mark.parametrize("name", sorted(GOOD))
def test_the_scanner_accepts(name: str) -> None:
    assert scan_source(GOOD[name]) == [], name
