"""Token state of the OAuth fakes: moved to ``cloud/tokens.py``; this name stays for older imports."""

from __future__ import annotations

from .cloud.tokens import ACCESS_LIFETIME, TokenBook

__all__ = ["ACCESS_LIFETIME", "TokenBook"]
