"""Authentication: password and API-key hashes, login tokens, failed-login rate limits."""
