"""The cluster's HTTP entry: the daemon's routes, answered for the whole fleet.

Requests that use one model (``POST /v1/embeddings``, loads) go to a replica chosen by
model id: one that holds it (round-robin over copies), else the registry's choice for
a cold model (the most free budget; concurrent first requests get the same replica).
Views (``/v1/models``, ``/models``, ``/v1/devices``, ``/device/*``, ``/metrics``) are built
from the replicas' reports; ejects and pin changes go to every holder. Anything else is
forwarded to one replica, whose daemon app answers it (``/docs``, ``/v1/registry``, 404s).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qsl, urlencode

from starlette.requests import Request
from starlette.responses import Response

from modelctl import __version__
from modelctl.cluster import views
from modelctl.cluster.asgi_call import ForwardedRequest, ForwardedResponse
from modelctl.cluster.fleet import Report, device_kind, holders_of, holds, on_node
from modelctl.cluster.options import ClusterOptions
from modelctl.config import Limits
from modelctl.errors import (
    ApiError,
    BadRequest,
    HardwareCompatibilityError,
    InvalidArgument,
    ModelNotInCache,
    PayloadTooLarge,
    ServiceUnavailable,
    Unauthorized,
    Unprocessable,
)

if TYPE_CHECKING:
    from modelctl.wire import CacheEntry

log = logging.getLogger("modelctl.cluster")

# How often the routing snapshot is refreshed from the registry: a model loaded a
# moment ago is routed by the registry's placement until the snapshot shows it.
SNAPSHOT_S = 0.25
NO_CUDA = "CUDA is not available on this instance"
Handler = Callable[[Request, bytes], Awaitable[Response]]


class ReplicaGone(Exception):
    """Raised when a call to a replica fails in Ray: it died, or its node did."""


class ClusterIngress:
    async def __init__(self, registry: Any, replicas: dict[str, Any],  # type: ignore[misc]
                   args: dict[str, Any]) -> None:
        options = ClusterOptions.from_args(args)
        self.registry = registry
        self.replicas = replicas
        self.limits = Limits()
        self.api_key = hashlib.sha256(options.api_key.encode()).digest() \
            if options.api_key else None
        self.started = time.monotonic()
        self.snapshot: list[Report] = []
        self._turn = itertools.count()
        self._refresher = asyncio.get_running_loop().create_task(self._refresh_forever())
        self.routes: dict[tuple[str, str], Handler] = {
            ("GET", "/"): self.root, ("GET", "/v1/health"): self.health,
            ("GET", "/v1/models"): self.list_models, ("POST", "/v1/models"): self.load,
            ("PATCH", "/v1/models"): self.update, ("DELETE", "/v1/models"): self.eject,
            ("GET", "/v1/devices"): self.devices, ("POST", "/v1/embeddings"): self.embeddings,
            ("GET", "/metrics"): self.metrics, ("GET", "/models"): self.marqo_models,
            ("DELETE", "/models"): self.marqo_eject, ("GET", "/device/cpu"): self.marqo_cpu,
            ("GET", "/device/cuda"): self.marqo_cuda, ("POST", "/v1/listeners"): self.listeners,
        }

    async def __call__(self, request: Request) -> Response:
        try:
            self._check_key(request)
            body = await self._body(request)
            handler = self.routes.get((request.method, request.url.path), self.forward_any)
            return await handler(request, body)
        except ApiError as exc:
            return _error(exc)
        except Exception as exc:  # a bug: the contract's 500, and the log has the rest
            log.exception("cluster ingress failed on %s %s", request.method, request.url.path)
            return _error(ApiError(f"internal error: {type(exc).__name__}; see the Serve logs"))

    # -- plumbing ------------------------------------------------------------------------
    def _check_key(self, request: Request) -> None:
        if self.api_key is None:
            return
        given = request.headers.get("x-api-key")
        auth = request.headers.get("authorization", "")
        if given is None and auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
        # compare_digest of digests: the time taken tells nothing about the key.
        if given is None or not hmac.compare_digest(
                hashlib.sha256(given.encode()).digest(), self.api_key):
            raise Unauthorized("missing or wrong API key: send it as x-api-key or "
                               "Authorization: Bearer")

    async def _body(self, request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or
                                   int(length) > self.limits.max_body_bytes):
            raise PayloadTooLarge(f"request body over {self.limits.max_body_bytes} bytes")
        body = await request.body()
        if len(body) > self.limits.max_body_bytes:
            raise PayloadTooLarge(f"request body over {self.limits.max_body_bytes} bytes")
        return body

    async def _refresh_forever(self) -> None:
        while True:
            try:
                self.snapshot = await self.registry.live.remote()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("reading the fleet registry failed", exc_info=True)
            await asyncio.sleep(SNAPSHOT_S)

    async def _live(self) -> list[Report]:
        self.snapshot = await self.registry.live.remote()
        return self.snapshot

    async def _call(self, replica: str, request: ForwardedRequest) -> ForwardedResponse:
        try:
            response: ForwardedResponse = await self.replicas[replica].request.remote(request)
            return response
        except KeyError:
            raise ReplicaGone(replica) from None
        except Exception as exc:  # Ray's errors: the actor or its node died
            log.warning("replica %s failed: %s", replica, exc)
            await self.registry.forget.remote(replica)
            self.snapshot = [r for r in self.snapshot if r["replica"] != replica]
            raise ReplicaGone(replica) from exc

    async def _send(self, replica: str, request: Request, body: bytes, *,
                    query: dict[str, Any] | None = None) -> ForwardedResponse:
        raw_query = request.url.query.encode() if query is None else \
            urlencode({k: v for k, v in query.items() if v is not None}).encode()
        # The body may have been rewritten (a load without copies and node): its length
        # is the one sent on.
        headers = [(k, v) for k, v in request.headers.raw if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        return await self._call(replica, ForwardedRequest(
            request.method, request.url.path, raw_query, headers, body))

    # -- routes that use one model -------------------------------------------------------
    async def embeddings(self, request: Request, body: bytes) -> Response:
        fields = _json_object(body)
        model, device = fields.get("model"), fields.get("device")
        if not isinstance(model, str) or not isinstance(device, str | None):
            return await self.forward_any(request, body)  # the daemon's app says what is wrong
        tried: list[str] = []
        for _ in range(3):  # a replica that died mid-request: the next one takes it
            replica = self._holder(model, device, tried) or await self.registry.place.remote(
                model, device, None, tried)
            if replica is None:
                raise _nowhere(device)
            try:
                return _response(await self._send(replica, request, body))
            except ReplicaGone:
                tried.append(replica)
        raise ServiceUnavailable(f"no replica could serve {model}; `modelctl cluster status`")

    def _holder(self, model: str, device: str | None, tried: list[str]) -> str | None:
        holders = [r["replica"] for r in holders_of(self.snapshot, model)
                   if r["replica"] not in tried and _serves(r, device)]
        return holders[next(self._turn) % len(holders)] if holders else None

    async def load(self, request: Request, body: bytes) -> Response:
        fields = _json_object(body)
        copies, node = fields.pop("copies", 1), fields.pop("node", None)
        name, device = fields.get("name"), fields.get("device")
        if not isinstance(copies, int) or isinstance(copies, bool) or not 1 <= copies <= 64:
            raise InvalidArgument("copies must be a whole number from 1 to 64")
        if not isinstance(node, str | None) or not isinstance(device, str | None):
            raise InvalidArgument("node and device must be strings")
        if not isinstance(name, str):
            return await self.forward_any(request, body)
        await self._live()
        forwarded = json.dumps(fields).encode()
        if copies == 1:
            return await self._load_one(request, forwarded, name, device, node)
        targets = await self.registry.copies.remote(name, copies, device, node)
        if not targets:
            raise _nowhere(device, node)
        replies = await asyncio.gather(*(self._send(t, request, forwarded) for t in targets),
                                       return_exceptions=True)
        entries = []
        for target, reply in zip(targets, replies, strict=True):
            if isinstance(reply, BaseException):
                continue
            if reply.status >= 400:
                return _response(reply)
            entries.append(self._tag(json.loads(reply.body), target))
        if not entries:
            raise ServiceUnavailable("every replica chosen for the load went away; try again")
        return _json({**entries[0], "copies": entries})

    async def _load_one(self, request: Request, body: bytes, name: str, device: str | None,
                        node: str | None) -> Response:
        """Load on the registry's choice; a replica that has no room (409: what it holds
        is pinned or in use) passes the load on to the next, so nothing in use is evicted
        while another replica can take the model."""
        tried: list[str] = []
        refused: ForwardedResponse | None = None
        while True:
            target = await self.registry.place.remote(name, device, node, tried)
            if target is None:
                if refused is not None:
                    return _response(refused)
                raise _nowhere(device, node)
            try:
                reply = await self._send(target, request, body)
            except ReplicaGone:
                tried.append(target)
                continue
            if reply.status != 409:
                return _response(reply) if reply.status >= 400 else \
                    _json(self._tag(json.loads(reply.body), target))
            refused = refused or reply
            tried.append(target)

    def _tag(self, entry: dict[str, Any], replica: str) -> dict[str, Any]:
        report = next((r for r in self.snapshot if r["replica"] == replica), {})
        return {**entry, "node": report.get("node"), "node_id": report.get("node_id"),
                "replica": replica}

    # -- routes that go to every holder ----------------------------------------------------
    async def _fan_out(self, request: Request, body: bytes, targets: list[str],
                       query: dict[str, Any] | None = None
                       ) -> list[tuple[str, ForwardedResponse]]:
        replies = await asyncio.gather(*(self._send(t, request, body, query=query)
                                         for t in targets), return_exceptions=True)
        return [(t, r) for t, r in zip(targets, replies, strict=True)
                if not isinstance(r, BaseException)]

    def _holders(self, live: list[Report], name: str | None, device: str | None,
                 node: str | None) -> list[str]:
        reports = [r for r in live if on_node(r, node)]
        if name is not None:
            reports = holders_of(reports, name)
        else:
            reports = [r for r in reports if r.get("entries")]
        kind = device_kind(device)
        return [r["replica"] for r in reports
                if kind is None or any(device_kind(e.get("device")) == kind
                                       for e in r.get("entries") or ())]

    async def eject(self, request: Request, body: bytes) -> Response:
        query = dict(parse_qsl(request.url.query))
        name, device, node = query.get("name"), query.get("device"), query.pop("node", None)
        everything = query.get("all", "").lower() in ("1", "true", "yes")
        if not everything and not name:
            raise InvalidArgument("name is required (or all=true)")
        targets = self._holders(await self._live(), None if everything else name, device, node)
        if not targets and not everything:
            raise ModelNotInCache(f"The model_name `{name}` is not cached or found")
        ejected: list[dict[str, Any]] = []
        for target, reply in await self._fan_out(request, body, targets, query):
            if reply.status == 404:
                continue  # ejected or evicted between the view and the call
            if reply.status >= 400:
                return _response(reply)
            ejected += [self._tag(item, target) for item in json.loads(reply.body)["ejected"]]
        if not ejected and not everything:
            raise ModelNotInCache(f"The model_name `{name}` is not cached or found")
        return _json({"ejected": ejected,
                      "bytes_freed": sum(e.get("bytes_freed") or 0 for e in ejected)})

    async def update(self, request: Request, body: bytes) -> Response:
        fields = _json_object(body)
        node = fields.pop("node", None)
        name, device = fields.get("name"), fields.get("device")
        if not isinstance(name, str) or not isinstance(node, str | None):
            return await self.forward_any(request, body)
        targets = self._holders(await self._live(), name, device, node)
        if not targets:
            raise ModelNotInCache(f"The model_name `{name}` is not cached or found")
        models: list[dict[str, Any]] = []
        for target, reply in await self._fan_out(request, json.dumps(fields).encode(), targets):
            if reply.status >= 400 and reply.status != 404:
                return _response(reply)
            if reply.status < 400:
                models += [self._tag(m, target) for m in json.loads(reply.body)["models"]]
        return _json({"models": models})

    async def marqo_eject(self, request: Request, body: bytes) -> Response:
        from modelctl.daemon.routes_marqo import eject_message

        query = dict(parse_qsl(request.url.query, keep_blank_values=True))
        name, device = query.get("model_name"), query.get("model_device")
        if name is None:
            raise Unprocessable.missing("query", "model_name")
        where = f" device `{device}`" if device is not None else ""
        not_found = ModelNotInCache(f"The model_name `{name}`{where} is not cached or found")
        if device is not None and device_kind(device) not in ("cpu", "cuda"):
            raise not_found  # Marqo does not validate the device here: 404
        live = await self._live()
        targets = self._holders(live, name, device, None) if name else []
        kinds = {r["replica"]: [k for e in r.get("entries") or () if holds(e, name)
                                and (k := device_kind(e.get("device")) or "cpu")
                                and (device is None or k == device_kind(device))]
                 for r in live if r["replica"] in targets}
        devices: list[str] = []
        for target, reply in await self._fan_out(request, body, targets):
            if reply.status < 400:
                devices += [k for k in kinds.get(target, []) if k not in devices]
        if not devices:
            raise not_found
        return _json({"result": "success", "message": eject_message(name, devices)})

    # -- views -----------------------------------------------------------------------------
    async def list_models(self, request: Request, body: bytes) -> Response:
        from modelctl.daemon.views import openai_model

        # OpenAI's model list, as a daemon answers it: one item per copy in the fleet.
        return _json({"object": "list", "data": [
            openai_model(cast("CacheEntry", entry))
            for entry in views.fleet_entries(await self._live())]})

    async def devices(self, request: Request, body: bytes) -> Response:
        return _json(views.fleet_devices(await self._live()))

    async def marqo_models(self, request: Request, body: bytes) -> Response:
        return _json(views.marqo_models(await self._live()))

    async def marqo_cpu(self, request: Request, body: bytes) -> Response:
        return _json(views.marqo_cpu(await self._live()))

    async def marqo_cuda(self, request: Request, body: bytes) -> Response:
        rows = views.marqo_cuda(await self._live())
        if not rows:
            raise HardwareCompatibilityError(NO_CUDA)
        return _json({"cuda_devices": rows})

    async def metrics(self, request: Request, body: bytes) -> Response:
        live = await self._live()
        texts = await asyncio.gather(*(self.replicas[r["replica"]].metrics.remote()
                                       for r in live if r["replica"] in self.replicas),
                                     return_exceptions=True)
        merged = views.merge_metrics([(r, t) for r, t in zip(live, texts, strict=False)
                                      if isinstance(t, str)])
        return Response(merged, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def root(self, request: Request, body: bytes) -> Response:
        return _json({"message": "Welcome to modelctl, a Marqo-compatible model cache",
                      "version": __version__})

    async def health(self, request: Request, body: bytes) -> Response:
        live = await self._live()
        return _json({"status": "ok", "version": __version__, "cluster": True,
                      "uptime_s": round(time.monotonic() - self.started, 3),
                      "replicas": len(live), "deployed_replicas": len(self.replicas),
                      "torch_ready": all(r.get("torch_ready") for r in live) and bool(live)})

    async def listeners(self, request: Request, body: bytes) -> Response:
        raise InvalidArgument("a cluster's listener is Serve's: set it with "
                              "`modelctl cluster up --http PORT`")

    async def forward_any(self, request: Request, body: bytes) -> Response:
        live = self.snapshot or await self._live()
        for report in live:
            try:
                return _response(await self._send(report["replica"], request, body))
            except ReplicaGone:
                continue
        raise ServiceUnavailable("no replica of the cluster is up yet; "
                                 "`modelctl cluster status` shows them")


def _serves(report: Report, device: str | None) -> bool:
    kind = device_kind(device)
    return kind is None or device_kind(report.get("device")) == kind


def _nowhere(device: str | None, node: str | None = None) -> ApiError:
    wanted = " and ".join(x for x in (f"device {device}" if device else "",
                                       f"node {node}" if node else "") if x)
    return InvalidArgument(f"no live replica of the cluster serves {wanted}" if wanted else
                           "no replica of the cluster is up yet; `modelctl cluster status`")


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        fields = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("request body is not valid JSON") from None
    if not isinstance(fields, dict):
        raise BadRequest("request body must be a JSON object")
    return fields


def _json(content: Any, status: int = 200) -> Response:
    from modelctl.daemon.responses import dump_json

    return Response(dump_json(content), status_code=status, media_type="application/json")


def _error(exc: ApiError) -> Response:
    return _json(exc.body(), exc.status)


def _response(reply: ForwardedResponse) -> Response:
    media = (reply.header(b"content-type") or b"application/json").decode()
    return Response(reply.body, status_code=reply.status, media_type=media)
