"""Ready-made supervised services built on the libraries users already trust.

Each module needs its extra: ``http`` (hypercorn, Starlette), ``websocket``
(trio-websocket), ``metrics`` (prometheus-client), ``postgres`` (psycopg). SQLite needs none.
"""
