"""The daemon: its process (server.py), listeners (listener.py), HTTP app (app.py),
cache, batcher and loaders.

Nothing here is imported by the CLI; ``python -m modelctl.daemon`` runs one.
"""
