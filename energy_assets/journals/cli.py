"""`energy-assets rebuild` and `energy-assets replay`."""

from __future__ import annotations

import argparse
import sys

from energy_assets.cli import instant


def register(commands: argparse._SubParsersAction) -> None:
    rebuild = commands.add_parser(
        "rebuild",
        help="Rebuild the warehouse from the journals (deals and vendor answers)",
        description="Rebuild raw_trades, feed_gaps, reference_prices and "
        "reference_price_revisions from the journals' archive into a new DuckDB file, and "
        "swap it in for the warehouse once complete. Refuses while another process has the "
        "warehouse open (stop the demo or the Dagster daemon first) and when an archived "
        "file does not match its checksum. The next trader_exposure refresh restores the "
        "exposure.",
    )
    rebuild.add_argument("--warehouse", help="DuckDB file (default: ENERGY_DUCKDB_PATH)")
    rebuild.add_argument("--archive", help="journals' archive (default: ENERGY_ARCHIVE_URL)")
    rebuild.add_argument(
        "--allow-fewer",
        action="store_true",
        help="replace the warehouse even when the journals give fewer deals or price "
        "revisions than it holds (e.g. rows stored before the archive existed)",
    )
    rebuild.set_defaults(run=run_rebuild)

    replay = commands.add_parser(
        "replay",
        help="The desk's positions and PnL at a past instant, from the journals",
        description="Replay the deals received and the prices fetched at or before --at and "
        "print every trader's totals, or one trader's positions per delivery period.",
    )
    replay.add_argument("--at", required=True, type=instant, help="e.g. 2026-12-01T10:00Z")
    replay.add_argument("--trader", help="one trader's positions per delivery period")
    replay.add_argument("--archive", help="journals' archive (default: ENERGY_ARCHIVE_URL)")
    replay.set_defaults(run=run_replay)


def run_rebuild(args: argparse.Namespace) -> int:
    from energy_assets.journals.archive import ArchiveCorrupt, archive_problem
    from energy_assets.journals.rebuild import RebuildRefused, rebuild
    from energy_assets.settings import settings

    current = settings()
    problem = archive_problem(args.archive or current.archive)
    if problem:
        print(f"rebuild refused, the warehouse is unchanged: {problem}", file=sys.stderr)
        return 2
    try:
        rebuild(
            args.warehouse or current.duckdb_path,
            args.archive or current.archive,
            progress=lambda line: print(line, flush=True),
            allow_fewer=args.allow_fewer,
        )
    except (ArchiveCorrupt, RebuildRefused) as err:
        print(f"rebuild refused, the warehouse is unchanged: {err}", file=sys.stderr)
        return 2
    return 0


def run_replay(args: argparse.Namespace) -> int:
    import polars as pl
    from upath import UPath

    from energy_assets.journals.archive import DEALS, ArchiveCorrupt, archive_problem, day_folders
    from energy_assets.journals.replay import view_at
    from energy_assets.settings import settings

    archive = args.archive or settings().archive
    problem = archive_problem(archive)
    if problem:
        print(f"replay refused: {problem}", file=sys.stderr)
        return 2
    if not day_folders(UPath(archive), DEALS):
        print(
            f"replay refused: no deals' journal in {archive} (ENERGY_ARCHIVE_URL?)", file=sys.stderr
        )
        return 2
    try:
        view = view_at(args.at, archive)
    except ArchiveCorrupt as err:
        print(f"replay refused: {err}", file=sys.stderr)
        return 2
    print(
        f"the desk at {args.at.isoformat()}: {view.deals:,} deals received, "
        f"{view.prices.height:,} delivery periods priced"
    )
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200, tbl_hide_dataframe_shape=True):
        if args.trader:
            rows = view.of_trader(args.trader)
            if rows.is_empty():
                print(f"{args.trader} held no position at that instant")
                return 0
            print(rows.drop("trader_id"))
            print(view.totals().filter(pl.col("trader_id") == args.trader))
        else:
            print(view.totals())
    return 0
