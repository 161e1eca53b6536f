"""Local servers standing in for each cloud provider, for tests (fixtures: ``conftest_plugin``).

One module per server, each with a ``running_<name>(workdir)`` context manager yielding a frozen
``ServerInfo`` subclass (``base``): s3 (moto), ftp (pyftpdlib), sftp (OpenSSH), webdav (wsgidav),
http_files (http.server), azure (Azurite), swift, b2 and oauth (aiohttp fakes; OneDrive for OAuth);
``cloud`` holds the OAuth and Google providers' fakes, reached at their real host names through
``intercept_proxy``.
``process`` starts and stops programs, ``fake_runner`` serves the fakes from a thread, ``rclone`` runs
rclone against them. Programs outside the venv come from ``scripts/install-test-servers.sh``.
"""
