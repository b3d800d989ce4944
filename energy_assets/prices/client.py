"""`MarketDataClient`: the vendor's Market Data API, within its budget, answers validated.

What is transient is retried with bounded exponential backoff (5xx, timeouts, refused or
dropped connections, 429 after its `Retry-After`); what is not fails at once (any other 4xx,
an answer that is not a valid price for the hour asked). Every attempt, retries included,
first takes a slot of the shared `RequestBudget`. A missing or bad price is an error, never 0.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

import dagster as dg
import requests
from pydantic import PrivateAttr
from requests.adapters import HTTPAdapter

from energy_assets.delivery import hour_label, parse_hour_label
from energy_assets.prices.answer import EURO_MWH, PriceRules, Refused, judge_answer
from energy_assets.prices.budget import BULK, BudgetLimits, RequestBudget
from energy_assets.settings import DEFAULT_MARKET_DATA_URL

PRICE_PATH = "reference-price"


class MarketDataError(Exception):
    """A reference price could not be had. The message names the request."""


class MarketDataRequestRefused(MarketDataError):
    """The vendor answered 4xx: our request is wrong, retrying cannot help."""


class InvalidPriceAnswer(MarketDataError):
    """The vendor answered 200 with something that is not a valid price for the hour asked."""


class MarketDataUnavailable(MarketDataError):
    """Transient failures went on past the last retry."""


@dataclass(frozen=True)
class ReferencePrice:
    delivery_day: date
    delivery_hour: str
    value: float
    unit: str
    last_update: datetime
    fetched_at: datetime


@dataclass
class FetchReport:
    """What a batch of fetches did: prices by key, errors by key, and the request counts."""

    prices: dict[str, ReferencePrice] = field(default_factory=dict)
    errors: dict[str, MarketDataError] = field(default_factory=dict)
    requests: int = 0
    retries: int = 0
    budget_wait_s: float = 0.0


def join_url(base_url: str, path: str) -> str:
    """`http://h:1` + `reference-price` -> `http://h:1/reference-price`; keeps a base path
    such as `/v1` (`https://h/v1/` or `https://h/v1` -> `https://h/v1/reference-price`)."""
    return base_url.rstrip("/") + "/" + path.lstrip("/")


def parse_price_answer(
    body: bytes | str, day: date, label: str, fetched_at: datetime, rules: PriceRules = EURO_MWH
) -> ReferencePrice | Refused:
    """One 200 answer for the hourly request form, judged alone (`answer.judge_answer`): the
    price of the hour asked, or why it is refused. Never raises."""
    judged = judge_answer(
        body, {"delivery_day": day.isoformat(), "delivery_hour": label}, rules, now=fetched_at
    )
    if isinstance(judged, Refused):
        return judged
    return ReferencePrice(
        delivery_day=day,
        delivery_hour=label,
        value=judged.value,
        unit=judged.unit,
        last_update=judged.last_update,
        fetched_at=fetched_at,
    )


def _retry_after_s(header: str | None) -> float | None:
    if not header:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(header).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class MarketDataClient(dg.ConfigurableResource):
    """The vendor's Market Data API (`ENERGY_MARKET_DATA_URL`), budgeted and validated."""

    base_url: str = DEFAULT_MARKET_DATA_URL
    connect_timeout_s: float = 3.05
    read_timeout_s: float = 10.0
    #: Retries after the first attempt of a transient failure (so 1 + max_retries requests).
    max_retries: int = 4
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    #: Concurrent fetches of one run (threads sharing the pooled session).
    max_concurrency: int = 16
    #: False lifts the budget (benchmarks against a playground without a rate limit).
    budget_enabled: bool = True
    budget_path: str = "data/market_data_budget.sqlite"
    requests_per_minute: int = 50
    requests_per_hour: int = 1000
    schedule_reserve: int = 47
    budget_margin_s: float = 1.0

    _session: requests.Session | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _budget: RequestBudget | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._ensure_session()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._session is not None:
                self._session.close()
                self._session = None

    def _ensure_session(self) -> requests.Session:
        with self._lock:
            if self._session is None:
                session = requests.Session()
                # One pool shared by every fetch thread; urllib3's pool is thread-safe and the
                # session carries no per-request state (no cookies, no auth refresh).
                adapter = HTTPAdapter(
                    pool_connections=1, pool_maxsize=max(1, self.max_concurrency), max_retries=0
                )
                session.mount("http://", adapter)
                session.mount("https://", adapter)
                session.headers["Accept"] = "application/json"
                self._session = session
            return self._session

    @property
    def budget(self) -> RequestBudget | None:
        if not self.budget_enabled:
            return None
        with self._lock:
            if self._budget is None:
                self._budget = RequestBudget(
                    Path(self.budget_path),
                    BudgetLimits(
                        per_minute=self.requests_per_minute,
                        per_hour=self.requests_per_hour,
                        reserve=self.schedule_reserve,
                        margin_s=self.budget_margin_s,
                    ),
                )
            return self._budget

    @property
    def price_url(self) -> str:
        return join_url(self.base_url, PRICE_PATH)

    def _backoff(self, attempt: int) -> float:
        # Full jitter keeps many threads that failed together from retrying together.
        ceiling = min(self.backoff_max_s, self.backoff_base_s * (2**attempt))
        return random.uniform(ceiling / 2, ceiling)

    def fetch_price(
        self,
        day: date,
        delivery_hour: str | int,
        priority: str = BULK,
        report: FetchReport | None = None,
    ) -> ReferencePrice:
        """The vendor's current price of one delivery hour. Raises MarketDataError."""
        label = hour_label(delivery_hour) if isinstance(delivery_hour, int) else delivery_hour
        parse_hour_label(label)  # never send the vendor garbage: it would answer 200 anyway
        params = {"delivery_day": day.isoformat(), "delivery_hour": label}
        name = f"GET {self.price_url}?delivery_day={params['delivery_day']}&delivery_hour={label}"
        session = self._ensure_session()
        budget = self.budget
        report = report if report is not None else FetchReport()
        attempt = 0
        while True:
            if budget is not None:
                waited = budget.acquire(priority)
                with self._lock:
                    report.budget_wait_s += waited
            with self._lock:
                report.requests += 1
                report.retries += 1 if attempt else 0
            problem, pause = self._attempt(session, params, day, label, name)
            if isinstance(problem, ReferencePrice):
                return problem
            if isinstance(problem, MarketDataRequestRefused | InvalidPriceAnswer):
                raise problem
            if attempt >= self.max_retries:
                raise MarketDataUnavailable(
                    f"{name}: still failing after {attempt + 1} attempts: {problem}"
                )
            delay = pause if pause is not None else self._backoff(attempt)
            if pause is not None and budget is not None:
                budget.pause_until(time.time() + pause)
            time.sleep(delay)
            attempt += 1

    def _attempt(self, session, params, day, label, name):
        """One request. Returns (price, None), (fatal error, None) or (transient reason, pause)."""
        try:
            response = session.get(
                self.price_url,
                params=params,
                timeout=(self.connect_timeout_s, self.read_timeout_s),
            )
        except requests.Timeout as error:
            return f"timed out ({type(error).__name__})", None
        except requests.ConnectionError as error:
            return f"connection failed ({type(error).__name__}: {error})", None
        except requests.RequestException as error:
            return f"request failed ({type(error).__name__}: {error})", None
        fetched_at = datetime.now(UTC)
        status = response.status_code
        if status == 200:
            price = parse_price_answer(response.content, day, label, fetched_at)
            if isinstance(price, Refused):
                return InvalidPriceAnswer(f"{name}: {price.reason}"), None
            return price, None
        if status == 429:
            return "429 Too Many Requests", _retry_after_s(response.headers.get("Retry-After"))
        if status >= 500:
            return f"HTTP {status}", None
        return (
            MarketDataRequestRefused(f"{name}: HTTP {status}: {response.text[:200]!r}"),
            None,
        )

    def fetch_many(
        self,
        hours: Sequence[tuple[str, date, str]] | Iterable[tuple[str, date, str]],
        priority: str = BULK,
        max_workers: int | None = None,
    ) -> FetchReport:
        """Fetch `(key, day, hour)` items concurrently, in the order given (the budget is
        granted roughly first come, first served). Failures are collected, not raised."""
        report = FetchReport()
        items = list(hours)
        workers = max(1, min(max_workers or self.max_concurrency, len(items) or 1))

        def one(item):
            key, day, label = item
            try:
                price = self.fetch_price(day, label, priority=priority, report=report)
            except MarketDataError as error:
                with self._lock:
                    report.errors[key] = error
                return
            except Exception as error:  # the last resort: one period fails, never the run
                with self._lock:
                    report.errors[key] = MarketDataError(
                        f"{key}: unexpected {type(error).__name__}: {str(error)[:200]}"
                    )
                return
            with self._lock:
                report.prices[key] = price

        if workers == 1:
            for item in items:
                one(item)
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="market-data") as pool:
                list(pool.map(one, items))
        return report
