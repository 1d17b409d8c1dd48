"""Identity: accounts, passwords, TOTP, sign-in with lockout, web sessions and smart-card sign-in.

Every function takes a `sqlalchemy.Connection` and never commits: the web request or the CLI
owns the transaction (docs/ARCHITECTURE.md). Time comes from `garrison.clock.now()` only.
"""
