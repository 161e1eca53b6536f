"""Built-in cloud provider plugins: one module per provider, each declaring ``PROVIDER``.

They are found through the ``middlewared_cc.providers`` entry points (pyproject.toml), never by scanning
this folder. See README.md here for how to add one.
"""
