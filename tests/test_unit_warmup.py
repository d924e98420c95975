"""The warm-up thread and the app that is built while the daemon already serves.

In one process, no daemon: ``ImportThread`` runs its jobs in order, off the event loop,
at a short switch interval that it gives back; ``LateApp`` holds requests until the app
exists and answers the contract's 500 if it never will.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from typing import Any

import pytest

from modelctl.daemon.listener import LateApp
from modelctl.daemon.warmup import IMPORT_SWITCH_INTERVAL_S, ImportThread


def test_jobs_run_in_order_in_one_thread_after_start() -> None:
    ran: list[tuple[str, str, float]] = []
    interval = sys.getswitchinterval()

    def job(name: str) -> str:
        ran.append((name, threading.current_thread().name, sys.getswitchinterval()))
        return name

    async def main() -> list[str]:
        imports = ImportThread("warm-up")
        first, second = imports.submit(lambda: job("app")), imports.submit(lambda: job("torch"))
        await asyncio.sleep(0.05)
        assert not ran  # queued until started
        imports.start()
        imports.start()  # a second start while it runs changes nothing
        return list(await asyncio.gather(first, second))

    assert asyncio.run(main()) == ["app", "torch"]
    assert [(name, thread) for name, thread, _ in ran] == [("app", "warm-up"),
                                                          ("torch", "warm-up")]
    # The interpreter keeps the interval in microseconds: compare as such.
    assert [round(seen * 1e6) for _, _, seen in ran] == [round(IMPORT_SWITCH_INTERVAL_S * 1e6)] * 2
    assert sys.getswitchinterval() == interval


def test_a_failed_job_raises_through_its_future_and_the_next_still_runs() -> None:
    def broken() -> None:
        raise ImportError("no module named fastapi")

    async def main() -> str:
        imports = ImportThread()
        failed, after = imports.submit(broken), imports.submit(lambda: "ran")
        imports.start()
        with pytest.raises(ImportError, match="fastapi"):
            await failed
        result = await after
        # The thread has ended with its queue; a later job needs start() again.
        later = imports.submit(lambda: "later")
        imports.start()
        return result + " " + await later

    assert asyncio.run(main()) == "ran later"


class _Recorded:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"])

    @property
    def body(self) -> Any:
        return json.loads(self.messages[1]["body"])


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b""}


SCOPE = {"type": "http", "method": "GET", "path": "/v1/registry", "headers": []}


def test_requests_wait_for_the_app_then_reach_it() -> None:
    served: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        served.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def main() -> list[int]:
        built: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        late = LateApp(built)
        answers = [_Recorded() for _ in range(3)]
        early = [asyncio.ensure_future(late(dict(SCOPE), _receive, a.send))
                 for a in answers[:2]]
        await asyncio.sleep(0.02)
        assert not served and not any(a.messages for a in answers)  # waiting, not failed
        early[0].cancel()  # one client gives up: the build goes on for the others
        await asyncio.sleep(0)
        built.set_result(app)
        await asyncio.gather(*early, return_exceptions=True)
        await late(dict(SCOPE), _receive, answers[2].send)  # built: straight through
        return [a.status for a in answers[1:]]

    assert asyncio.run(main()) == [200, 200]
    assert served == ["/v1/registry", "/v1/registry"]


def test_a_failed_build_answers_the_contracts_500() -> None:
    async def main() -> _Recorded:
        built: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        built.set_exception(ImportError("no module named fastapi"))
        answer = _Recorded()
        await LateApp(built)(dict(SCOPE), _receive, answer.send)
        return answer

    answer = asyncio.run(main())
    assert answer.status == 500
    assert answer.body["code"] == "internal" and "web app" in answer.body["message"]
