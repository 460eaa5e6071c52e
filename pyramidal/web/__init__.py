"""`pyramidal serve`: a local web page for restoring photographs (FastAPI app, one hand-written page).

`engine` is the only module here that talks to the rest of pyramidal; `app` is the HTTP side.
"""
