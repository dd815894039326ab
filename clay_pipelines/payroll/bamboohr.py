"""A BambooHR API client for the payroll dual-write.

HTTPS with HTTP Basic auth (the API key as user name, any password), under the company-domain base
URL https://api.bamboohr.com/api/gateway.php/<company>. It uses the employee directory
(GET /v1/employees/directory) and an employee table's rows (GET and POST
/v1/employees/<id>/tables/<table>), the table being configuration.

Faults: 429 and 503 honour Retry-After; other 5xx and transport errors back off exponentially
(capped, with jitter); attempts are bounded; any other 4xx is final (dead letter, with the reason).
BambooHR has no idempotency key, so after an ambiguous failure (a timeout or a connection dropped
after the request was sent) the client reads the employee's rows first and adopts a matching row
rather than posting a duplicate.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

DEFAULT_BASE = "https://api.bamboohr.com/api/gateway.php/{company}"


class DeliveryFailed(Exception):
    """Delivery did not happen. `final` means retrying cannot help (a dead letter)."""

    def __init__(self, message: str, final: bool) -> None:
        super().__init__(message)
        self.final = final


@dataclass(frozen=True)
class BambooHRConfig:
    company_domain: str
    api_key: str
    table: str = "customPayroll"
    base_url: str = ""  # default: BambooHR's gateway for company_domain
    max_attempts: int = 5
    backoff_seconds: float = 0.5
    backoff_cap_seconds: float = 30.0
    retry_after_cap_seconds: float = 120.0
    timeout_seconds: float = 20.0

    @property
    def api_base(self) -> str:
        return (self.base_url or DEFAULT_BASE.format(company=self.company_domain)).rstrip("/")


@dataclass(frozen=True, kw_only=True)
class Delivered:
    remote_row_id: str | None
    attempts: int
    adopted: bool  # an existing matching row was found instead of posting again


def directory_people(employees: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """BambooHR's directory entries as the employee directory cache stores people."""
    return [
        {
            "id": str(e["id"]),
            "first_name": e.get("firstName") or "",
            "last_name": e.get("lastName") or "",
            "middle_name": e.get("middleName") or "",
            "preferred_name": e.get("preferredName"),
            "job_title": e.get("jobTitle"),
            "work_email": e.get("workEmail"),
        }
        for e in employees
    ]


def _retry_after(response: httpx.Response, cap: float) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return max(0.0, min(seconds, cap))


class BambooHRClient:
    def __init__(
        self,
        config: BambooHRConfig,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        verify: bool = True,
    ) -> None:
        self.config = config
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._http = httpx.Client(
            base_url=config.api_base,
            auth=(config.api_key, "x"),
            headers={"Accept": "application/json"},
            timeout=config.timeout_seconds,
            verify=verify,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> BambooHRClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reads ----------------------------------------------------------------------------------

    def _get(self, path: str) -> Any:
        for attempt in range(1, self.config.max_attempts + 1):
            try:
                response = self._http.get(path)
            except httpx.TransportError as error:
                if attempt == self.config.max_attempts:
                    raise DeliveryFailed(f"GET {path}: {type(error).__name__}: {error}", final=False) from error
                self._backoff(attempt)
                continue
            if response.status_code in (429, 503) or response.status_code >= 500:
                if attempt == self.config.max_attempts:
                    raise DeliveryFailed(f"GET {path}: HTTP {response.status_code}", final=False)
                self._wait(response, attempt)
                continue
            if response.status_code >= 400:
                raise DeliveryFailed(f"GET {path}: HTTP {response.status_code} {response.text[:200]}", final=True)
            return response.json()
        raise AssertionError("unreachable")

    def directory(self) -> list[dict[str, Any]]:
        return list(self._get("/v1/employees/directory").get("employees", []))

    def table_rows(self, employee_id: str) -> list[dict[str, Any]]:
        rows = self._get(f"/v1/employees/{employee_id}/tables/{self.config.table}")
        return list(rows if isinstance(rows, list) else rows.get("rows", []))

    # -- the write ------------------------------------------------------------------------------

    def add_row(self, employee_id: str, row: dict[str, str]) -> Delivered:
        path = f"/v1/employees/{employee_id}/tables/{self.config.table}"
        ambiguous = False
        for attempt in range(1, self.config.max_attempts + 1):
            if ambiguous:
                # The last POST may have landed: adopt the row rather than write it twice.
                existing = self._matching_row(employee_id, row)
                if existing is not None:
                    return Delivered(remote_row_id=existing, attempts=attempt - 1, adopted=True)
                ambiguous = False
            try:
                response = self._http.post(path, json=row)
            except (httpx.TimeoutException, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as error:
                ambiguous = not isinstance(error, httpx.ConnectTimeout)
                last_error = f"{type(error).__name__}: {error}"
                if attempt < self.config.max_attempts:
                    self._backoff(attempt)
                continue
            except httpx.TransportError as error:  # connection refused etc.: nothing was sent
                last_error = f"{type(error).__name__}: {error}"
                if attempt < self.config.max_attempts:
                    self._backoff(attempt)
                continue
            if response.status_code in (200, 201):
                return Delivered(remote_row_id=self._row_id(response), attempts=attempt, adopted=False)
            last_error = f"HTTP {response.status_code} {response.text[:200]}".strip()
            if response.status_code == 429 or response.status_code >= 500:
                if attempt < self.config.max_attempts:
                    self._wait(response, attempt)
                continue
            raise DeliveryFailed(f"POST {path}: {last_error}", final=True)
        if ambiguous and (existing := self._matching_row(employee_id, row)) is not None:
            return Delivered(remote_row_id=existing, attempts=self.config.max_attempts, adopted=True)
        raise DeliveryFailed(
            f"POST {path}: gave up after {self.config.max_attempts} attempts ({last_error})", final=False
        )

    def _matching_row(self, employee_id: str, row: dict[str, str]) -> str | None:
        for existing in self.table_rows(employee_id):
            if all(str(existing.get(k, "")) == str(v) for k, v in row.items()):
                return str(existing.get("id")) if existing.get("id") is not None else ""
        return None

    @staticmethod
    def _row_id(response: httpx.Response) -> str | None:
        location = response.headers.get("Location")
        if location:
            return location.rstrip("/").rsplit("/", 1)[-1]
        try:
            body = response.json()
        except ValueError:
            return None
        return str(body.get("id")) if isinstance(body, dict) and body.get("id") is not None else None

    # -- waiting --------------------------------------------------------------------------------

    def _backoff(self, attempt: int) -> None:
        ceiling = min(self.config.backoff_cap_seconds, self.config.backoff_seconds * 2 ** (attempt - 1))
        self._sleep(self._rng.uniform(ceiling / 2, ceiling))  # jitter: retries of many clients spread out

    def _wait(self, response: httpx.Response, attempt: int) -> None:
        delay = _retry_after(response, self.config.retry_after_cap_seconds)
        if delay is None:
            self._backoff(attempt)
        else:
            self._sleep(delay)
