"""Push notifications (A2A §9, webhook safety per §13.2): the four config methods, kept in the task store with the
task (scoped to its owner), and the worker that delivers every task update to each config's webhook.

What is delivered is derived from the events the task store recorded after each config's cursor, so deliveries
are in order per task and none is lost when the coordinator stops: the cursor moves only once a delivery is done
(accepted by the webhook, or dead-lettered after its last retry). Each POST carries the config's authentication
as `Authorization`, its token as `X-A2A-Notification-Token`, and a delivery id (`X-A2A-Delivery-Id`, the same on
every retry of one update) for the receiver to drop duplicates by. Webhooks must be public addresses unless the
operator allow-lists them (MESH_PUSH_ALLOWED_NETWORKS); redirects are never followed.

With several coordinator replicas, one delivers each config's updates: it claims the config in the store (a lease,
renewed while it delivers, given up when done or on stop; a dead replica's leases expire after
MESH_PUSH_LEASE_SECONDS and another replica carries on from the cursor). The worker looks for work every
MESH_PUSH_POLL_INTERVAL while it has some or was just woken (a task with a push config relayed an event here), and
less and less often otherwise, up to MESH_PUSH_IDLE_INTERVAL."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from a2a.types import a2a_pb2 as pb
from a2a.utils import errors as sdk_errors

from a2amesh.settings import CoordinatorSettings
from mesh_coordinator.auth import Principal
from mesh_coordinator.directory import EVERY_TASK, DependencyError
from mesh_coordinator.owners import TaskOwners, caller, reader_of

log = logging.getLogger(__name__)

DELIVERY_ID_HEADER = "X-A2A-Delivery-Id"
TOKEN_HEADER = "X-A2A-Notification-Token"
DELIVERY_NAMESPACE = uuid.UUID("6f1f7f1e-2c53-4a55-9d0c-2f3a0b5e2a20")
"""uuid5 namespace of delivery ids: one id per (task, config, event), stable across retries and restarts."""
MAX_PARALLEL_CONFIGS = 32
"""Configs delivered to at once (each config's updates go one after the other, in order)."""
MAX_ID_LENGTH = 128
EAGER_SECONDS = 3.0
"""After a wake-up, how long the worker keeps looking every MESH_PUSH_POLL_INTERVAL: the store records the event
that woke it moments later."""
RELEASE_WAIT = 5.0
STOP_CHECK = 1.0
"""Seconds an idle worker takes at most to notice it should stop."""
NetworkT = ipaddress.IPv4Network | ipaddress.IPv6Network


class WebhookRefused(ValueError):
    """A webhook URL the coordinator will not call; the text says why."""


class WebhookPolicy:
    """Which webhook URLs may be called: http(s) only, and every address the host resolves to public, unless it
    lies in an allow-listed network (the operator's own receivers: MESH_PUSH_ALLOWED_NETWORKS)."""

    def __init__(self, allowed: Sequence[str]) -> None:
        self.allowed: list[NetworkT] = [ipaddress.ip_network(entry.strip(), strict=False) for entry in allowed]

    async def check(self, url: str) -> None:
        """WebhookRefused unless `url` may be called now (checked again before every POST: DNS may change)."""
        try:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise WebhookRefused("the webhook URL cannot be parsed") from None
        if parts.scheme not in ("http", "https"):
            raise WebhookRefused("the webhook URL must be http or https")
        if not parts.hostname:
            raise WebhookRefused("the webhook URL has no host")
        if parts.username or parts.password:
            raise WebhookRefused("the webhook URL must not carry credentials (use authentication)")
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
        except OSError:
            raise WebhookRefused(f"the webhook host {parts.hostname} does not resolve") from None
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
                address = address.ipv4_mapped
            if any(address in network for network in self.allowed):
                continue
            if not address.is_global or address.is_multicast:
                raise WebhookRefused(
                    f"the webhook host {parts.hostname} is a non-public address ({address}); an operator can "
                    "allow-list it with MESH_PUSH_ALLOWED_NETWORKS"
                )


class PushStoreClient:
    """The task store's push API (mesh_taskstore.push)."""

    def __init__(self, base_url: str, client: httpx.AsyncClient) -> None:
        self.base_url = base_url.rstrip("/")
        self.client = client

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self.client.request(method, f"{self.base_url}{path}", **kwargs)
        except httpx.HTTPError as error:
            raise DependencyError(f"task store unavailable: {error}") from error
        if response.status_code >= 500:
            raise DependencyError(f"task store answered {response.status_code}")
        return response

    async def put(self, task_id: str, config: dict[str, Any], reader: Mapping[str, str]) -> dict[str, Any] | None:
        path = f"/tasks/{_segment(task_id)}/push-configs/{_segment(config['id'])}"
        response = await self._call("PUT", path, json=config, params=dict(reader))
        if response.status_code == 400:
            raise sdk_errors.InvalidParamsError(message=response.json().get("error", "invalid push config"))
        return response.json() if response.status_code == 200 else None

    async def list(self, task_id: str, reader: Mapping[str, str]) -> list[dict[str, Any]] | None:
        response = await self._call("GET", f"/tasks/{_segment(task_id)}/push-configs", params=dict(reader))
        return list(response.json()["configs"]) if response.status_code == 200 else None

    async def delete(self, task_id: str, config_id: str, reader: Mapping[str, str]) -> bool:
        path = f"/tasks/{_segment(task_id)}/push-configs/{_segment(config_id)}"
        return (await self._call("DELETE", path, params=dict(reader))).status_code == 204

    async def claim(self, holder: str, seconds: float, renew: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
        """The configs with pending updates now leased to `holder` (mesh_taskstore.push), renewing those in `renew`."""
        body = {"holder": holder, "leaseSeconds": seconds, "renew": [{"taskId": t, "id": c} for t, c in renew]}
        response = await self._call("POST", "/push/claims", json=body)
        return list(response.json()["pending"]) if response.status_code == 200 else []

    async def advance(self, task_id: str, config_id: str, seq: int, holder: str) -> bool:
        """Move the cursor; False when another replica holds the config's lease now (this one must stop)."""
        path = f"/tasks/{_segment(task_id)}/push-configs/{_segment(config_id)}/delivered"
        return (await self._call("PUT", path, json={"seq": seq, "holder": holder})).status_code != 409

    async def release(self, holder: str) -> None:
        await self._call("POST", "/push/release", json={"holder": holder})

    async def dead_letter(self, letter: dict[str, Any]) -> None:
        await self._call("POST", "/push/dead-letters", json=letter)

    async def dead_letters(self, reader: Mapping[str, str]) -> list[dict[str, Any]]:
        response = await self._call("GET", "/push/dead-letters", params=dict(reader))
        return list(response.json().get("deadLetters", [])) if response.status_code == 200 else []


def _segment(value: str) -> str:
    return quote(value, safe="").replace(".", "%2E")


def _checked_id(value: str, name: str) -> str:
    if not value:
        raise sdk_errors.InvalidParamsError(message=f"{name} is required")
    if len(value) > MAX_ID_LENGTH or "/" in value:
        raise sdk_errors.InvalidParamsError(message=f"{name} must be at most {MAX_ID_LENGTH} characters, no '/'")
    return value


def config_proto(wire: Mapping[str, Any]) -> pb.TaskPushNotificationConfig:
    config = pb.TaskPushNotificationConfig(
        id=str(wire["id"]), task_id=str(wire["taskId"]), url=str(wire["url"]), token=str(wire.get("token", ""))
    )
    authentication = wire.get("authentication")
    if authentication:
        config.authentication.scheme = str(authentication.get("scheme", ""))
        config.authentication.credentials = str(authentication.get("credentials", ""))
    return config


class PushConfigs:
    """The four push-config methods, for the caller that owns the task (an operator: any task)."""

    def __init__(self, store: PushStoreClient, owners: TaskOwners, policy: WebhookPolicy) -> None:
        self.store = store
        self.owners = owners
        self.policy = policy
        self.wake: Callable[[], None] = _asleep
        """Wakes the delivery worker (set by whoever runs it): called for each event of a task with a config."""

    async def _owned(self, task_id: str, scope: str) -> dict[str, str]:
        """Check the caller owns the task, and return the store scope to use from then on: every task, since the
        check passed here (from memory for this coordinator's own tasks), so a config set as the task starts does
        not wait for its owner record to reach the store."""
        await self.owners.check(_checked_id(task_id, "taskId"), caller(scope))
        return dict(EVERY_TASK)

    async def check_url(self, url: str) -> None:
        """InvalidParams (-32602, with the reason) for a webhook the coordinator will not call."""
        try:
            await self.policy.check(url)
        except WebhookRefused as error:
            raise sdk_errors.InvalidParamsError(message=f"push notification URL refused: {error}") from None

    async def create(self, params: pb.TaskPushNotificationConfig) -> pb.TaskPushNotificationConfig:
        checked = await self._owned(params.task_id, "send")
        await self.check_url(params.url)
        config: dict[str, Any] = {
            "id": _checked_id(params.id or str(uuid.uuid4()), "id"),
            "url": params.url,
            "token": params.token,
        }
        if params.HasField("authentication"):
            config["authentication"] = {
                "scheme": params.authentication.scheme,
                "credentials": params.authentication.credentials,
            }
        saved = await self._stored(self.store.put(params.task_id, config, checked))
        if saved is None:
            raise sdk_errors.TaskNotFoundError(message=f"Task {params.task_id} not found")
        return config_proto(saved)

    async def list(self, task_id: str) -> list[pb.TaskPushNotificationConfig]:
        checked = await self._owned(task_id, "read")
        configs = await self._stored(self.store.list(task_id, checked))
        if configs is None:
            raise sdk_errors.TaskNotFoundError(message=f"Task {task_id} not found")
        return [config_proto(config) for config in configs]

    async def get(self, task_id: str, config_id: str) -> pb.TaskPushNotificationConfig:
        for config in await self.list(task_id):
            if config.id == config_id:
                return config
        raise sdk_errors.TaskNotFoundError(message=f"push notification config {config_id} not found")

    async def delete(self, task_id: str, config_id: str) -> None:
        checked = await self._owned(task_id, "send")
        if not await self._stored(self.store.delete(task_id, _checked_id(config_id, "id"), checked)):
            raise sdk_errors.TaskNotFoundError(message=f"push notification config {config_id} not found")

    async def dead_letters(self, principal: Principal) -> list[dict[str, Any]]:
        return await self._stored(self.store.dead_letters(reader_of(principal)))

    @staticmethod
    async def _stored(call: Any) -> Any:
        try:
            return await call
        except DependencyError as error:
            raise sdk_errors.InternalError(message=str(error)) from None


def delivery_id(task_id: str, config_id: str, event_id: str) -> str:
    return str(uuid.uuid5(DELIVERY_NAMESPACE, f"{task_id}\n{config_id}\n{event_id}"))


def _asleep() -> None:
    """No delivery worker runs (a handler without one)."""


class DeliveryWorker:
    """Delivers pending updates of the configs this replica claims: one runner per config with work, its updates in
    order, each retried with exponential backoff up to MESH_PUSH_MAX_ATTEMPTS POSTs and then dead-lettered."""

    def __init__(self, settings: CoordinatorSettings, store: PushStoreClient, policy: WebhookPolicy) -> None:
        self.settings = settings
        self.store = store
        self.policy = policy
        self.holder = str(settings.service_address("coordinator"))
        """The name leases are held under: this replica's identity (a restarted replica takes its own back)."""
        self._running: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._ended_meanwhile: set[tuple[str, str]] = set()
        """Configs whose runner ended while a claim was on its way: that claim may have read their cursor before
        the runner's last advance, so they wait for the next one (which reads it afresh)."""
        self._woken = asyncio.Event()
        self._eager_until = 0.0
        self.claims = 0
        """Looks for work so far (for tests and the curious: idle, they become rare)."""

    def wake(self) -> None:
        """An update is on its way to the store: look for it now, and keep looking briskly for EAGER_SECONDS."""
        self._eager_until = time.monotonic() + EAGER_SECONDS
        self._woken.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Claim and deliver until `stop`, then give up the claims so another replica carries on at once. The
        webhook client (its own: never the internal one, whose client certificate is not for strangers) is made
        on the first delivery: a mesh nobody subscribes to pays no TLS context for it."""
        client: httpx.AsyncClient | None = None
        store_down = False
        interval = self.settings.push_poll_interval
        try:
            while not stop.is_set():
                self._ended_meanwhile = set()
                try:
                    pending = await self.store.claim(self.holder, self.settings.push_lease_seconds, list(self._running))
                    self.claims += 1
                    if store_down:
                        log.info("push deliveries go on: the task store answers again")
                    store_down = False
                except DependencyError as error:
                    if not store_down:  # once per outage, not every poll
                        log.warning("push deliveries wait for the task store: %s", error)
                    store_down, pending = True, []
                for entry in pending:
                    key = (str(entry["taskId"]), str(entry["id"]))
                    if key in self._running or key in self._ended_meanwhile:
                        continue
                    if len(self._running) >= MAX_PARALLEL_CONFIGS:
                        continue
                    if client is None:
                        timeout = httpx.Timeout(self.settings.push_timeout)
                        client = httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False)
                    runner = asyncio.create_task(self._deliver_all(client, entry, stop))
                    self._running[key] = runner
                    runner.add_done_callback(lambda _t, key=key: self._ended(key))
                busy = bool(pending or self._running) or time.monotonic() < self._eager_until
                # while delivering, every look renews the leases: keep looking at least thrice a lease
                fastest = min(self.settings.push_poll_interval, self.settings.push_lease_seconds / 3)
                interval = fastest if busy else min(interval * 2, max(self.settings.push_idle_interval, fastest))
                self._woken.clear()
                await self._pause(interval, stop)
            if self._running:
                await asyncio.wait(list(self._running.values()), timeout=self.settings.push_timeout)
        finally:
            with contextlib.suppress(DependencyError, TimeoutError):
                await asyncio.wait_for(self.store.release(self.holder), RELEASE_WAIT)
            if client is not None:
                await client.aclose()

    def _ended(self, key: tuple[str, str]) -> None:
        self._running.pop(key, None)
        self._ended_meanwhile.add(key)

    async def _pause(self, seconds: float, stop: asyncio.Event) -> None:
        """Wait `seconds`, less when woken, and notice `stop` within STOP_CHECK (no task of its own waits for it: an
        idle coordinator keeps its memory)."""
        deadline = time.monotonic() + seconds
        while not (stop.is_set() or self._woken.is_set()):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), min(left, STOP_CHECK))

    async def _deliver_all(self, client: httpx.AsyncClient, entry: dict[str, Any], stop: asyncio.Event) -> None:
        task_id, config_id = str(entry["taskId"]), str(entry["id"])
        try:
            for item in entry["events"]:
                if not await self._deliver(client, entry, item, stop):
                    return  # stopping: the cursor stays, so this update goes out after the restart
                if not await self.store.advance(task_id, config_id, int(item["seq"]), self.holder):
                    log.info("push deliveries of task %s config %s went to another replica", task_id, config_id)
                    return
        except DependencyError as error:
            log.warning("push delivery for task %s paused: %s", task_id, error)
        except Exception:
            log.exception("push delivery for task %s config %s failed", task_id, config_id)

    async def _deliver(
        self, client: httpx.AsyncClient, entry: dict[str, Any], item: dict[str, Any], stop: asyncio.Event
    ) -> bool:
        """POST one update until the webhook takes it or the attempts run out (then a dead letter): True when
        done either way, False when `stop` came first."""
        task_id, config_id, url = str(entry["taskId"]), str(entry["id"]), str(entry["url"])
        identity = delivery_id(task_id, config_id, str(item["eventId"]))
        headers = {DELIVERY_ID_HEADER: identity}
        if entry.get("token"):
            headers[TOKEN_HEADER] = str(entry["token"])
        authentication = entry.get("authentication") or {}
        if authentication.get("scheme"):
            headers["Authorization"] = f"{authentication['scheme']} {authentication.get('credentials', '')}".strip()
        error = ""
        attempts = 0
        delay = self.settings.push_backoff
        for attempts in range(1, self.settings.push_max_attempts + 1):
            try:
                await self.policy.check(url)
            except WebhookRefused as refused:
                error = str(refused)
                break  # retrying a forbidden address cannot help
            try:
                response = await client.post(url, json=item["event"], headers=headers)
                if 200 <= response.status_code < 300:
                    return True
                error = f"the webhook answered {response.status_code}"
            except httpx.HTTPError as failure:
                error = f"{type(failure).__name__}: {failure}"
            if attempts == self.settings.push_max_attempts:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                return False
            delay = min(delay * 2, self.settings.push_backoff_max)
        log.warning("push delivery %s to %s dead after %d attempts: %s", identity, url, attempts, error)
        letter = {
            "deliveryId": identity,
            "taskId": task_id,
            "configId": config_id,
            "url": url,
            "eventSeq": int(item["seq"]),
            "attempts": attempts,
            "error": error,
        }
        await self.store.dead_letter(letter)
        return True
