"""The `garrison` command line: adapts arguments to domain calls, like the web layer adapts HTTP."""
