"""HTTP routes other than the websockets: the Cloud Credentials page at ``/ui/`` and its static files.

The page is plain HTML, CSS and ES modules shipped as package data (``static/``); it talks only to the
daemon's JSON-RPC websocket, like every other client. ``routes.add(app)`` wires it into an application.
"""
