"""The web console: log in, triage alert episodes, read their explanations, upload traffic (``tapwatch console``).

Flask, server-rendered pages with a little JavaScript and no build step; every asset is served by the console itself
(SOC networks are often air-gapped). Storage is SQLite in the data folder, or PostgreSQL by URL, through SQLAlchemy
with Alembic migrations. ``docs/console.md`` describes the pages, the roles and running it behind a TLS proxy.
"""
