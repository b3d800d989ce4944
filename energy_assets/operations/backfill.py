"""The demo's start-up backfill of recent reference prices: no click needed.

The price planner (`reference_prices_planner`) keeps the *open* hours fresh, by value, from
its first tick; it never fetches an hour past gate closure. So a fresh demo would show trades
without prices for the hours already delivered. At start, the demo asks Dagster's GraphQL API
(the webserver's `/graphql`) for one backfill, exactly as the UI's "Materialize selected →
partition range" does: every `reference_prices` partition from `days` days ago to the hour
under way (the closed hours: the open ones are the planner's, whose batches are worth more)
that has never been materialised. The daemon's backfill loop runs it; the asset's
single-run backfill policy makes it one run (per contiguous range), visible under
Overview → Backfills with the title below. A restart asks again only for what is still
missing, and not at all while an earlier start-up backfill is still running.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

#: Asset whose recent partitions are backfilled at start.
PRICES_ASSET = "reference_prices"
TITLE = "recent reference prices (demo start)"
#: Tag on the backfill, so an operator (and the next start) can tell where it came from.
REQUESTED_BY_TAG = "energy/requested_by"
REQUESTED_BY = "energy-assets backfill-recent-prices"


@dataclass(frozen=True)
class BackfillRequest:
    backfill_id: str | None
    partitions: list[str]
    reason: str


def window_start(now: datetime, days: int) -> datetime:
    """Midnight UTC `days` days before `now`'s day (0 = today)."""
    now = now.astimezone(UTC)
    return datetime(now.year, now.month, now.day, tzinfo=UTC) - timedelta(days=days)


def recent_partition_keys(partitions_def, now: datetime, days: int) -> list[str]:
    """Keys of `partitions_def` from `window_start(now, days)` to the hour under way at
    `now` (its delivery has started: past gate closure, its price final)."""
    keys = partitions_def.get_partition_keys(current_time=now)
    if not keys:
        return []
    # Later hours are open: the price planner fetches them by value, fresh priority; a bulk
    # backfill of them would spend the budget on periods nobody holds. Hourly keys sort as
    # their times.
    last = min(keys[-1], partitions_def.get_partition_key_for_timestamp(now.timestamp()))
    wanted = window_start(now, days)
    first = (
        keys[0]
        if wanted <= partitions_def.start
        else partitions_def.get_partition_key_for_timestamp(wanted.timestamp())
    )
    return [key for key in keys if first <= key <= last]


# Dagster has no public Python API that requests a backfill (dagster-io/dagster#26786); its
# GraphQL API, which the UI itself uses, is public.
_RUNNING = """
query RunningBackfills {
  partitionBackfillsOrError(status: REQUESTED, limit: 50) {
    ... on PartitionBackfills { results { id tags { key value } } }
    ... on Error { message }
  }
}
"""
_LAUNCH = """
mutation LaunchBackfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
  }
}
"""


class BackfillRefused(RuntimeError):
    """Dagster's GraphQL API answered with an error instead of a backfill."""


def _graphql(url: str, query: str, variables: dict | None = None) -> dict:
    import requests

    response = requests.post(
        url.rstrip("/") + "/graphql",
        json={"query": query, "variables": variables or {}},
        timeout=60,
    )
    response.raise_for_status()
    body = response.json()
    if body.get("errors"):
        raise BackfillRefused("; ".join(error["message"] for error in body["errors"]))
    return body["data"]


def _running_startup_backfill(url: str) -> str | None:
    answer = _graphql(url, _RUNNING)["partitionBackfillsOrError"]
    if "message" in answer:
        raise BackfillRefused(answer["message"])
    for backfill in answer["results"]:
        if {"key": REQUESTED_BY_TAG, "value": REQUESTED_BY} in backfill["tags"]:
            return backfill["id"]
    return None


def request_recent_prices_backfill(
    url: str, instance, defs, days: int, now: datetime | None = None
) -> BackfillRequest:
    """Asks the Dagster webserver at `url` for one backfill of the recent `reference_prices`
    partitions that `instance` holds no materialisation of."""
    import dagster as dg

    now = now or datetime.now(UTC)
    running = _running_startup_backfill(url)
    if running:
        return BackfillRequest(running, [], "an earlier start-up backfill is still running")

    asset_graph = defs.resolve_asset_graph()
    key = dg.AssetKey(PRICES_ASSET)
    if not asset_graph.has(key):
        return BackfillRequest(None, [], f"no asset {PRICES_ASSET} in the code location")
    partitions_def = asset_graph.get(key).partitions_def
    wanted = recent_partition_keys(partitions_def, now, days)
    status = instance.get_status_by_partition(key, wanted, partitions_def) or {}
    missing = [p for p in wanted if status.get(p) != dg.AssetPartitionStatus.MATERIALIZED]
    if not missing:
        return BackfillRequest(None, [], "every recent partition is already materialised")

    params = {
        "partitionNames": missing,
        "assetSelection": [{"path": key.path}],
        "tags": [{"key": REQUESTED_BY_TAG, "value": REQUESTED_BY}],
        "title": TITLE,
        "description": f"{len(missing)} partitions of {PRICES_ASSET} never materialised, "
        f"{missing[0]} … {missing[-1]}",
    }
    answer = _graphql(url, _LAUNCH, {"params": params})["launchPartitionBackfill"]
    if answer["__typename"] != "LaunchBackfillSuccess":
        raise BackfillRefused(f"{answer['__typename']}: {answer.get('message', '')}")
    return BackfillRequest(answer["backfillId"], missing, "requested")
