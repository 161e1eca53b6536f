"""Moving credentials in and out: rclone config files (read and written) and TrueNAS configuration backups.

Everything here is a pure function from bytes or text to declarations and back, so it is tested on tables
of cases; the I/O, the job and the writes around them live in ``services/transfer.py``:

- ``rclone_file``: rclone's config file format (parse, render, ``RCLONE_ENCRYPT_V0:`` decryption,
  section names rclone accepts);
- ``rclone_mapping``: an rclone section to a provider's attributes and back, derived from the provider
  declarations (option names, obscured passwords, value maps, derived options, the keychain field);
- ``truenas``: TrueNAS's ``pwenc`` decryption and its tables of cloud credentials and SSH key pairs.
"""
