"""One HTTP-level test per hardening of issue 14: each fails on the code before it."""
