"""The views' HTTP pages, answered by the worker that owns the key and forwarded there by any other.

`GET /merchants/{merchant_id}/live` and `GET /platform/live` (docs/views.md):
the current tumbling minute, the last `?minutes=N` closed minutes (default 5,
at most 60), and the current hopping hour, each per currency.

Routing is faust's (`app.table_route`): the key's partition of the table's
changelog names the owning worker; a request that reaches another worker is
forwarded there and its answer passed back. `served_by` names the worker that
read its tables.

Result codes, in order of precedence:
- 503 `{"error": ...}` with Retry-After: this worker cannot route yet (starting,
  rebalancing, rebuilding its tables), or the owner did not answer. faust's
  router would fail these with a 500 and a traceback (it looks a key up in
  producer metadata that a starting worker may not have yet), so they are
  answered here first;
- 400 `{"error": ...}`: `minutes` is not a whole number from 0 to 60;
- 200: the figures.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any

import aiohttp
import faust
from faust.web import Request, Response, View

from paystream.views.aggregate import show_window, show_windows
from paystream.views.windows import MINUTES_SHOWN_DEFAULT, MINUTES_SHOWN_MAX, hour_range, minute_ranges

# Platform totals are kept under this one key, so a request for them is routed like a merchant's.
PLATFORM_KEY = "platform"
RETRY_AFTER_S = 1

Handler = Callable[..., Awaitable[Response]]


def add_pages(app: faust.App, merchant: tuple[Any, Any], platform: tuple[Any, Any], skipped: Any) -> None:
    """Register the two pages; `merchant` and `platform` are (minutes, hours) windowed tables."""
    merchant_minutes, merchant_hours = merchant
    platform_minutes, platform_hours = platform

    @app.page("/merchants/{merchant_id}/live")
    @_when_routable(app, merchant_minutes.table, lambda request: request.match_info["merchant_id"])
    @app.table_route(table=merchant_minutes.table, match_info="merchant_id")
    async def merchant_live(view: View, request: Request, merchant_id: str) -> Response:
        shown = minutes_shown(request.query.get("minutes"))
        if isinstance(shown, str):
            return view.error(400, shown)
        now_s = time.time()
        body = figures(merchant_minutes, merchant_hours, merchant_id, shown, now_s)
        return view.json({"merchant_id": merchant_id, **body, **_served(app, now_s)})

    @app.page("/platform/live")
    @_when_routable(app, platform_minutes.table, lambda _request: PLATFORM_KEY)
    @app.table_route(table=platform_minutes.table, exact_key=PLATFORM_KEY)
    async def platform_live(view: View, request: Request) -> Response:
        shown = minutes_shown(request.query.get("minutes"))
        if isinstance(shown, str):
            return view.error(400, shown)
        now_s = time.time()
        body = figures(platform_minutes, platform_hours, PLATFORM_KEY, shown, now_s)
        counts = dict(skipped.get(PLATFORM_KEY) or {})
        body["skipped"] = {"total": sum(counts.values()), "by_rule": dict(sorted(counts.items()))}
        return view.json({**body, **_served(app, now_s)})


def _when_routable(app: faust.App, table: Any, key_of: Callable[[Request], str]) -> Callable[[Handler], Handler]:
    """Answer 503 while faust cannot route or read the key here, instead of faust's 500."""

    def decorate(routed: Handler) -> Handler:
        @wraps(routed)
        async def get(view: View, request: Request, *args: Any, **kwargs: Any) -> Response:
            reason = _not_routable(app, table.name, key_of(request))
            if reason is None:
                try:
                    return await routed(view, request, *args, **kwargs)
                except (aiohttp.ClientError, TimeoutError) as error:
                    reason = f"the worker that owns this key did not answer ({type(error).__name__})"
            return view.error(503, reason, headers={"Retry-After": str(RETRY_AFTER_S)})

        return get

    return decorate


def _not_routable(app: faust.App, table_name: str, key: str) -> str | None:
    if app.rebalancing or app.in_recovery:
        return "the views workers are rebalancing or rebuilding their tables; try again"
    try:
        app.router.key_store(table_name, key)
    except (KeyError, TypeError):
        # KeyError: no owner known yet; TypeError: the producer has no metadata for the changelog yet.
        return "this views worker is starting and cannot route requests yet; try again"
    return None


def minutes_shown(raw: str | None) -> int | str:
    """How many closed minutes to show, or the reason `raw` is refused."""
    if raw is None:
        return MINUTES_SHOWN_DEFAULT
    if not raw.isascii() or not raw.isdigit() or not 0 <= int(raw) <= MINUTES_SHOWN_MAX:
        return f"minutes must be a whole number from 0 to {MINUTES_SHOWN_MAX}, got {raw[:20]!r}"
    return int(raw)


def figures(minutes: Any, hours: Any, key: str, shown: int, now_s: float) -> dict[str, Any]:
    """The current minute, `shown` closed minutes (newest first) and the current hour of one key."""
    ranges = minute_ranges(now_s, shown)
    # Read the stored windows as they are: the table's default (an empty dict) for one never written.
    values = [minutes.table.get((key, window)) for window in ranges]
    listed = show_windows(ranges, values, now_s)
    hour = hour_range(now_s)
    return {
        "minute": listed[0],
        "closed_minutes": listed[1:],
        "hour": show_window(hour, hours.table.get((key, hour)), now_s),
    }


def _served(app: faust.App, now_s: float) -> dict[str, Any]:
    return {"served_by": str(app.conf.canonical_url), "as_of": round(now_s, 3)}
