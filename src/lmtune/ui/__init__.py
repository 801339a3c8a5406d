"""``lmtune ui``: a local web app over the same functions as the CLI (data check, config, train, results, chat).

FastAPI routes (``app``) render Jinja2 pages (``templates/``) with a little inlined JavaScript; training
runs as a separate ``python -m lmtune train`` process (``jobs``), so a run started here is the same run
the command line starts, and the CLI's runs show up here too.
"""
