"""Wire-faithful fakes of the OAuth and Google providers, answering at their real host names.

One module per provider: google (the token endpoint shared by drive and gcs), drive, gcs, box, dropbox,
pcloud, yandex, onedrive; ``tokens`` holds the token state and rules they share, ``base`` the fixture
object and the serving. The daemon reaches them only through its ``https_proxy`` and ``ca_file`` settings:
the intercepting proxy routes each host name to the local port serving it. docs/FAKES.md lists which calls
each fake answers and where the real API documents them.
"""
