"""A reader of ``EmotionClient.messages`` stops when cancelled, even as a message arrives.

On Python 3.11 ``asyncio.wait_for`` returned the message and swallowed such a cancellation,
so a cancelled reader read on for ever (a CI hang in the WebRTC suite).
"""

from __future__ import annotations

import asyncio

from emostream.schema import ErrorMessage
from emostream.stream.client import EmotionClient, Source


def test_a_reader_cancelled_as_a_message_arrives_stops() -> None:
    async def main() -> bool:
        client = EmotionClient("http://127.0.0.1:9", source=Source())  # never connected
        got: list[object] = []

        async def read() -> None:
            async for msg in client.messages(idle_timeout_s=30):
                got.append(msg)

        task = asyncio.create_task(read())
        await asyncio.sleep(0.01)  # the reader waits on the queue
        client._queue.put_nowait(ErrorMessage(code="x", detail="y"))  # the same instant as
        task.cancel()  # the cancellation
        done, _ = await asyncio.wait([task], timeout=1.0)
        await client.pc.close()
        await client._http.aclose()
        if not done:
            task.cancel()
        return bool(done)

    assert asyncio.run(main()), "the reader swallowed its cancellation"
