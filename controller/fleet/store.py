"""EtcdStore: the fleet's one door to etcd v3, through etcd's own JSON gateway over aiohttp.

Every etcd v3 server (3.4 and later) serves its gRPC API as JSON too, at `/v3/...` on the client
port: `kv/range`, `kv/txn`, `kv/compaction`, `lease/grant|keepalive|revoke`, and `watch` as a
stream of JSON lines. docs/fleet.md says why this small client of ours rather than a PyPI
library (in short: no asyncio library handles watches and keep-alives the way failover needs,
and aiohttp is already ours). What the gateway changes: keys and values are base64, 64-bit
integers are JSON strings, and a field equal to its zero value is left out.

Endpoints: a call goes to the endpoint that answered last; when it cannot connect, or the
member answers UNAVAILABLE (no leader), the next one is tried. A write whose answer was lost
(a timeout once sent) is not sent again elsewhere: it raises EtcdUnavailable and the caller
re-reads, since the write may or may not have happened. Reads are linearizable (etcd's default),
so a lagging member never answers with old data.

Errors: EtcdUnavailable (no member answered), Compacted (a watch asked for a revision etcd has
already compacted: the caller re-reads everything), EtcdError (etcd refused the request).

Public surface:
    EtcdStore(endpoints, timeout).get, get_prefix, put, txn, grant, keepalive, revoke, compact,
        watch_prefix, close
    KeyValue, Listing, Compare, Put, Delete, TxnResult, Lease, Event, WatchBatch
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import structlog

log = structlog.get_logger(__name__)

_UNAVAILABLE = 14  # the gRPC status etcd answers when the member has no leader
MAX_WATCH_LINE = 16 * 1024 * 1024  # bytes of one watch response (etcd's own limit is ~1.5 MiB)


class EtcdError(Exception):
    """etcd refused a request (the gRPC status code and etcd's message)."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


class EtcdUnavailable(EtcdError):
    """No endpoint answered (or the one asked lost its answer)."""


class Compacted(EtcdError):
    """A watch started below the compacted revision: what changed since is lost; re-read."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"revision compacted (etcd keeps history from {compact_revision})")
        self.compact_revision = compact_revision


def _b64(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return base64.b64encode(data).decode()


def _unb64(value: object) -> bytes:
    return base64.b64decode(str(value)) if value else b""


def prefix_end(prefix: str) -> bytes:
    """The range end that makes [prefix, end) every key starting with `prefix` (a prefix
    ending in '/' ends before '0')."""
    data = prefix.encode()
    return data[:-1] + bytes([data[-1] + 1]) if data else b"\0"


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    @classmethod
    def parse(cls, data: dict[str, Any]) -> KeyValue:
        return cls(key=_unb64(data.get("key")).decode(), value=_unb64(data.get("value")),
                   create_revision=int(data.get("create_revision", 0)),
                   mod_revision=int(data.get("mod_revision", 0)),
                   version=int(data.get("version", 0)), lease=int(data.get("lease", 0)))


@dataclass(frozen=True)
class Listing:
    """The keys under a prefix, at `revision` (the store's revision when read)."""

    kvs: tuple[KeyValue, ...]
    revision: int


@dataclass(frozen=True)
class Compare:
    """One condition of a transaction: the key's `target` compared with `value`; with
    `prefix`, every key under it (etcd: range_end)."""

    key: str
    target: Literal["MOD", "CREATE", "VERSION", "VALUE"]
    value: int | bytes
    result: Literal["EQUAL", "NOT_EQUAL", "LESS", "GREATER"] = "EQUAL"
    prefix: bool = False

    @classmethod
    def mod_revision(cls, key: str, revision: int) -> Compare:
        """The key is as read at `revision` (0: the key does not exist)."""
        return cls(key, "MOD", revision)

    @classmethod
    def unchanged_since(cls, prefix: str, revision: int) -> Compare:
        """No key under `prefix` was written after `revision` (deletions are not seen)."""
        return cls(prefix, "MOD", revision + 1, result="LESS", prefix=True)

    def body(self) -> dict[str, Any]:
        field = {"MOD": "mod_revision", "CREATE": "create_revision", "VERSION": "version",
                 "VALUE": "value"}[self.target]
        value = (_b64(self.value) if isinstance(self.value, bytes) else str(self.value))
        body = {"key": _b64(self.key), "target": self.target, "result": self.result,
                field: value}
        if self.prefix:
            body["range_end"] = _b64(prefix_end(self.key))
        return body


@dataclass(frozen=True)
class Put:
    key: str
    value: bytes
    lease: int = 0

    def body(self) -> dict[str, Any]:
        put = {"key": _b64(self.key), "value": _b64(self.value)}
        if self.lease:
            put["lease"] = str(self.lease)
        return {"request_put": put}


@dataclass(frozen=True)
class Delete:
    key: str

    def body(self) -> dict[str, Any]:
        return {"request_delete_range": {"key": _b64(self.key)}}


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    revision: int  # the store's revision after it (unchanged when it failed)


@dataclass(frozen=True)
class Lease:
    id: int
    ttl: int  # seconds, as granted (etcd raises a TTL below its minimum)


@dataclass(frozen=True)
class Event:
    kind: Literal["PUT", "DELETE"]
    kv: KeyValue  # for a DELETE: the key, and the revision of the deletion as mod_revision


@dataclass(frozen=True)
class WatchBatch:
    """Events of one or more whole revisions, in order; `revision` is the last event's."""

    events: tuple[Event, ...]
    revision: int


class EtcdStore:
    def __init__(self, endpoints: Sequence[str], *, timeout: float = 5.0) -> None:
        if not endpoints:
            raise ValueError("no etcd endpoint given")
        self.endpoints = tuple(e if "://" in e else f"http://{e}" for e in endpoints)
        self.timeout = timeout
        self._current = 0  # the endpoint that answered last
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def get(self, key: str) -> KeyValue | None:
        answer = await self._call("kv/range", {"key": _b64(key)}, idempotent=True)
        kvs = answer.get("kvs", [])
        return KeyValue.parse(kvs[0]) if kvs else None

    async def get_prefix(self, prefix: str) -> Listing:
        answer = await self._call("kv/range", {"key": _b64(prefix),
                                               "range_end": _b64(prefix_end(prefix))},
                                  idempotent=True)
        return Listing(tuple(KeyValue.parse(kv) for kv in answer.get("kvs", [])),
                       _revision(answer))

    async def put(self, key: str, value: bytes, lease: int = 0) -> int:
        answer = await self._call("kv/put", Put(key, value, lease).body()["request_put"])
        return _revision(answer)

    async def txn(self, compare: Sequence[Compare], success: Sequence[Put | Delete],
                  failure: Sequence[Put | Delete] = ()) -> TxnResult:
        answer = await self._call("kv/txn", {"compare": [c.body() for c in compare],
                                             "success": [op.body() for op in success],
                                             "failure": [op.body() for op in failure]})
        return TxnResult(bool(answer.get("succeeded", False)), _revision(answer))

    async def compact(self, revision: int) -> None:
        await self._call("kv/compaction", {"revision": str(revision), "physical": True})

    async def grant(self, ttl: int) -> Lease:
        answer = await self._call("lease/grant", {"TTL": str(ttl)})
        return Lease(int(answer["ID"]), int(answer.get("TTL", ttl)))

    async def keepalive(self, lease: int) -> int:
        """Renew the lease once; its TTL from now, 0 when it has expired (or was revoked)."""
        answer = await self._call("lease/keepalive", {"ID": str(lease)}, idempotent=True)
        return int(answer.get("result", {}).get("TTL", 0))

    async def revoke(self, lease: int) -> None:
        """End the lease now: its keys go at once. An unknown lease is no error."""
        try:
            await self._call("lease/revoke", {"ID": str(lease)})
        except EtcdError as err:
            if "lease not found" not in str(err):
                raise

    async def watch_prefix(self, prefix: str,
                           start_revision: int) -> AsyncGenerator[WatchBatch, None]:
        """Every change under `prefix` from `start_revision` on, as it happens. Raises
        Compacted when etcd no longer has that revision, EtcdUnavailable when the stream
        ends (the member went away): the caller resumes from the last revision it saw."""
        body = {"create_request": {"key": _b64(prefix),
                                   "range_end": _b64(prefix_end(prefix)),
                                   "start_revision": str(start_revision)}}
        response = await self._open("watch", body, stream=True)
        try:
            async for message in _json_lines(response):
                batch = _watch_batch(message)
                if batch is not None:
                    yield batch
        except (aiohttp.ClientError, OSError, ValueError) as err:
            raise EtcdUnavailable(f"watch stream broken: {err}") from None
        finally:
            response.release()
        raise EtcdUnavailable("watch stream ended")

    # -- transport ------------------------------------------------------------------------------

    async def _call(self, path: str, body: dict[str, Any], *,
                    idempotent: bool = False) -> dict[str, Any]:
        response = await self._open(path, body, idempotent=idempotent)
        try:
            answer = await response.json(content_type=None)
        except (aiohttp.ClientError, OSError, ValueError) as err:  # TimeoutError is an OSError
            raise EtcdUnavailable(f"{self.endpoints[self._current]}: {err}") from None
        finally:
            response.release()
        if not isinstance(answer, dict):
            raise EtcdError(f"{path}: unexpected answer {answer!r:.200}")
        _raise_error(answer)
        return answer

    async def _open(self, path: str, body: dict[str, Any], *, idempotent: bool = True,
                    stream: bool = False) -> aiohttp.ClientResponse:
        """The response of the first endpoint, from the current one, that takes the request."""
        session = self._session_now()
        timeout = aiohttp.ClientTimeout(total=None if stream else self.timeout,
                                        connect=self.timeout)
        errors = []
        for step in range(len(self.endpoints)):
            index = (self._current + step) % len(self.endpoints)
            endpoint = self.endpoints[index]
            try:
                response = await session.post(f"{endpoint}/v3/{path}", json=body,
                                              timeout=timeout)
            except aiohttp.ClientConnectorError as err:  # never reached the member
                errors.append(f"{endpoint}: {err.os_error}")
                continue
            except (aiohttp.ClientError, OSError) as err:
                self._current = (index + 1) % len(self.endpoints)  # next call: another member
                if not idempotent:
                    raise EtcdUnavailable(f"{endpoint}: {err or type(err).__name__} (the "
                                          "write may or may not have happened)") from None
                errors.append(f"{endpoint}: {err or type(err).__name__}")
                continue
            if response.status == 503 and idempotent:  # UNAVAILABLE: no leader, say
                response.release()
                errors.append(f"{endpoint}: unavailable")
                continue
            self._current = index
            return response
        raise EtcdUnavailable("no etcd endpoint answered: " + "; ".join(errors))

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None:
            # a connection per request: a pooled one that a partition broke would fail the
            # next request, a write among them (requests are few: leases renew every ttl/3)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, force_close=True))
        return self._session


def _raise_error(answer: dict[str, Any]) -> None:
    if "error" in answer or ("code" in answer and "message" in answer):
        error = answer.get("error")
        message = str(error.get("message") if isinstance(error, dict) else
                      answer.get("message") or error)
        details: dict[str, Any] = error if isinstance(error, dict) else answer
        code = int(details.get("code", details.get("grpc_code", 0)))
        if code == _UNAVAILABLE:
            raise EtcdUnavailable(message, code)
        raise EtcdError(message, code)


def _revision(answer: dict[str, Any]) -> int:
    return int(answer.get("header", {}).get("revision", 0))


async def _json_lines(response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """The JSON objects of a gateway stream, one a line, however the chunks split them."""
    buffer = b""
    async for chunk in response.content.iter_any():
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        if len(buffer) > MAX_WATCH_LINE:
            raise EtcdError(f"a watch response larger than {MAX_WATCH_LINE} bytes")
        for line in lines:
            if line.strip():
                message = json.loads(line)
                if isinstance(message, dict):
                    yield message


def _watch_batch(message: dict[str, Any]) -> WatchBatch | None:
    """The events of one watch response; None for one without (created, progress)."""
    _raise_error(message)
    result = message.get("result", {})
    compact = int(result.get("compact_revision", 0))
    if compact:
        raise Compacted(compact)
    if result.get("canceled"):
        raise EtcdError(f"watch canceled by etcd: {result.get('cancel_reason', '')}")
    events = tuple(Event("DELETE" if e.get("type") == "DELETE" else "PUT",
                         KeyValue.parse(e.get("kv", {}))) for e in result.get("events", ()))
    if not events:
        return None
    return WatchBatch(events, events[-1].kv.mod_revision)


__all__ = ["Compacted", "Compare", "Delete", "EtcdError", "EtcdStore", "EtcdUnavailable",
           "Event", "KeyValue", "Lease", "Listing", "Put", "TxnResult", "WatchBatch",
           "prefix_end"]
