"""A query plan made for this execution's parameters, for the statements that need one.

asyncpg prepares every statement, and after five executions PostgreSQL may
keep one generic plan for the prepared statement. For most of the stages'
statements (primary-key lookups through `unnest`/`ANY`) the generic plan is
the custom one, and planning every execution cost the database ceiling about
a fifth of its throughput (docs/performance.md). Two statements did go wrong
with a generic plan chosen while their tables were small (design-decisions
§5): risk's payer-history read and settlement's stored-clearings lookup. They
run with a custom plan, set for that one statement only.
"""

from __future__ import annotations

from typing import Any


async def fetch_custom_plan(connection: Any, query: str, *args: Any) -> list[Any]:
    """`connection.fetch` planned for these arguments; must run inside a transaction.

    SET LOCAL ends with the transaction, so a failed fetch (which aborts the
    transaction) leaves nothing behind; after a success the mode goes back
    to the connection's default for the transaction's other statements.
    """
    await connection.execute("SET LOCAL plan_cache_mode = force_custom_plan")
    rows: list[Any] = await connection.fetch(query, *args)
    await connection.execute("SET LOCAL plan_cache_mode = auto")
    return rows
