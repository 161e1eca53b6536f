"""middlewared-cc: stores and verifies cloud-storage credentials, speaking TrueNAS middlewared's protocol."""

__version__ = "0.1.0"
