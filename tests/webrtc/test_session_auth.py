"""Per-session authorization with real sessions (issue 12 defect 9): a real server process,
real aiortc peers (``EmotionClient`` with a synthetic video track), inside the namespace.

Token A creates a session; token B cannot read, follow, end or patch it (404, exactly as
for an unknown session), no token is a 401; A and the session's own ``session_token``
can, and ``EmotionClient.close`` ends it with the session token. The same through WHIP
(``X-Session-Token``), and on an open server that requires the session token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from aiortc import VideoStreamTrack

from emostream.bench.procs import Server
from emostream.stream.client import EmotionClient, Source


def _bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


@pytest.fixture(scope="module")
def closed(netns_ip: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(netns_ip, tmp_path_factory.mktemp("auth"), EMOSTREAM_API_TOKENS="tok-a,tok-b")
    yield s
    s.stop()


@pytest.fixture()
async def http(closed: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=closed.url, trust_env=False, timeout=30) as c:
        yield c


class _Deletes:
    """The client's own DELETE replies, recorded off its HTTP client."""

    def __init__(self, client: EmotionClient) -> None:
        self.replies: list[tuple[int, str]] = []
        client._http.event_hooks["response"].append(self._seen)

    async def _seen(self, response: httpx.Response) -> None:
        if response.request.method == "DELETE":
            await response.aread()
            self.replies.append((response.status_code, response.text))


async def _refuses_strangers(http: httpx.AsyncClient, sid: str) -> None:
    unknown = (await http.get("/v1/sessions/nope", headers=_bearer("tok-b"))).json()
    for method, path in (
        ("GET", f"/v1/sessions/{sid}"),
        ("GET", f"/v1/sessions/{sid}/events"),
        ("DELETE", f"/v1/sessions/{sid}"),
        ("DELETE", f"/whip/{sid}"),
        ("PATCH", f"/whip/{sid}"),
    ):
        r = await http.request(method, path, headers=_bearer("tok-b"))
        assert r.status_code == 404, (method, path, r.text)
        assert r.json() == {**unknown, "detail": unknown["detail"].replace("nope", sid)}
        r = await http.request(method, path)
        assert r.status_code == 401 and r.json()["error"] == "unauthorized", r.text
        r = await http.request(method, path, headers=_bearer("not-a-session-token"))
        assert r.status_code == 401, r.text
    r = await http.get(f"/v1/sessions/{sid}/events?token=tok-b")
    assert r.status_code == 404, r.text


async def _first_event_line(http: httpx.AsyncClient, url: str, **kw: object) -> str:
    async with http.stream("GET", url, **kw) as resp:  # type: ignore[arg-type]
        assert resp.status_code == 200
        async for line in resp.aiter_lines():
            return line
    raise AssertionError("the events stream ended without a line")


async def test_a_session_answers_its_creator_and_its_token_only(
    closed: Server, http: httpx.AsyncClient
) -> None:
    client = EmotionClient(closed.url, source=Source([VideoStreamTrack()]), token="tok-a")
    deletes = _Deletes(client)
    try:
        await client.connect()
        sid, secret = client.session_id, client.session_token
        assert sid and secret and secret not in ("tok-a", "tok-b")
        await _refuses_strangers(http, sid)
        for who in ("tok-a", secret):
            r = await http.get(f"/v1/sessions/{sid}", headers=_bearer(who))
            assert r.status_code == 200 and r.json()["session_id"] == sid, r.text
        events = f"/v1/sessions/{sid}/events"
        assert await _first_event_line(http, f"{events}?token={secret}") == f": session {sid}"
        assert await _first_event_line(http, events, headers=_bearer("tok-a")) == (
            f": session {sid}"
        )
    finally:
        await client.close()  # ends it with the session token, not tok-a
    assert deletes.replies == [(200, f'{{"ended":"{sid}"}}')]
    r = await http.get(f"/v1/sessions/{sid}", headers=_bearer("tok-a"))
    assert r.status_code == 404


async def test_whip_returns_the_session_token(closed: Server, http: httpx.AsyncClient) -> None:
    client = EmotionClient(
        source=Source([VideoStreamTrack()]), whip=f"{closed.url}/whip", token="tok-a"
    )
    deletes = _Deletes(client)
    try:
        await client.connect()
        sid, secret = client.session_id, client.session_token
        assert sid and secret, "X-Session-Token missing from the WHIP answer"
        await _refuses_strangers(http, sid)
        r = await http.get(f"/v1/sessions/{sid}", headers=_bearer(secret))
        assert r.status_code == 200, r.text
    finally:
        await client.close()
    assert deletes.replies == [(200, f'{{"ended":"{sid}"}}')]


async def test_an_open_server_can_require_the_session_token(netns_ip: str, tmp_path: Path) -> None:
    s = Server(netns_ip, tmp_path, EMOSTREAM_SERVER__SESSION_TOKEN_REQUIRED="true")
    client = EmotionClient(s.url, source=Source([VideoStreamTrack()]))
    deletes = _Deletes(client)
    try:
        await client.connect()  # creating needs no token: the server has none
        sid, secret = client.session_id, client.session_token
        assert sid and secret
        async with httpx.AsyncClient(base_url=s.url, trust_env=False, timeout=30) as http:
            for method in ("GET", "DELETE"):
                r = await http.request(method, f"/v1/sessions/{sid}")
                assert r.status_code == 401, r.text
            r = await http.get(f"/v1/sessions/{sid}", headers=_bearer(secret))
            assert r.status_code == 200, r.text
        await client.close()
        assert deletes.replies == [(200, f'{{"ended":"{sid}"}}')]
    finally:
        await client.close()
        s.stop()
