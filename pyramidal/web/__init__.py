"""`pyramidal serve`: a local web page for restoring photographs (Starlette app, one hand-written page).

By job: `engine` (what the page asks of the library: tasks and weights, restoring with masks and progress,
samples and their scores, upload bytes), `settings` (`ServeConfig`, fixed at start), `jobs` (the bounded queue
and its worker thread), `guard` (the security checks and JSON errors) and `app` (the routes and `create_app`).
"""
