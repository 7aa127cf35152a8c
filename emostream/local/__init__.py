"""One machine, several ingest processes (``emostream serve --processes N``).

The children accept on one shared public socket, so any of them may get any request; what
makes that work without a parent on the data path lives here: ``routing`` sends a
session's requests to the child that holds it.
"""
