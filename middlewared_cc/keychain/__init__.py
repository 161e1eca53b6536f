"""Keychain credentials: SSH key pairs for SFTP."""

from middlewared_cc.keychain.keys import check_key_pair, generate_ssh_key_pair, public_key_from_private

__all__ = ["check_key_pair", "generate_ssh_key_pair", "public_key_from_private"]
