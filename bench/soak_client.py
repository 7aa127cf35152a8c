"""One session of ``emostream bench soak``, in a process of its own, so that it can die.

``python -m emostream.bench.soak_client URL CLIP SECONDS ENDING`` publishes CLIP (relayed
without re-encoding, as the stream bench's clients do) to the server at URL, counts the
result messages that come back for SECONDS, prints one JSON line ``{"session",
"messages"}`` (or ``{"error"}`` and exits 1) and ends the way ENDING says, each a way a
real client goes:

* ``delete``: ``DELETE`` the session, then close the peer connection (a client that says
  goodbye);
* ``hangup``: close the peer connection without ``DELETE`` (a tab closed: the server sees
  the connection close);
* ``vanish``: ``SIGKILL`` itself (a crashed client or a lost network: the server hears
  nothing and must find out by its idle timeout).

Run only inside a private network namespace (the soak starts it there).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

ENDINGS = ("delete", "hangup", "vanish")


def report(result: dict[str, object]) -> None:
    print(json.dumps(result), flush=True)


async def session(url: str, clip: str, seconds: float, ending: str) -> dict[str, object]:
    """Connect, stream for ``seconds``, end as ``ending`` says; what to report."""
    from aiortc.contrib.media import MediaPlayer

    from emostream.schema import ErrorMessage
    from emostream.stream.client import EmotionClient, Source

    player = MediaPlayer(clip, decode=False)
    assert player.video is not None, f"{clip} has no video"
    client = EmotionClient(url, source=Source([player.video], player))  # no ICE servers
    await client.connect()
    messages = 0

    async def count() -> None:
        nonlocal messages
        async for msg in client.messages():
            messages += not isinstance(msg, ErrorMessage)

    reader = asyncio.create_task(count())
    await asyncio.sleep(seconds)
    result: dict[str, object] = {"session": client.session_id, "messages": messages}
    if ending == "vanish":  # while the connection is up: nothing tells the server
        report(result)
        os.kill(os.getpid(), signal.SIGKILL)
    if ending == "hangup":
        client.resource = None  # no DELETE: the server learns it from the connection
    await client.close()
    reader.cancel()
    return result


def main(argv: list[str]) -> int:
    url, clip, seconds, ending = argv[0], argv[1], float(argv[2]), argv[3]
    if ending not in ENDINGS:
        raise SystemExit(f"ending {ending!r}: one of {', '.join(ENDINGS)}")
    try:
        result = asyncio.run(session(url, clip, seconds, ending))
    except Exception as exc:  # reported to the soak, which counts the session as failed
        report({"error": repr(exc)[:300]})
        return 1
    report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
