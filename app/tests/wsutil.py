"""Helpers for reading WebSocket frames in tests."""


async def receive(communicator, frame_type: str) -> dict:
    """The next frame of `frame_type`, skipping frames of other types."""
    while True:
        frame = await communicator.receive_json_from(timeout=3)
        if frame["type"] == frame_type:
            return frame


async def joined(communicator) -> list[dict]:
    """Consume the frames every connection starts with; returns the history."""
    history = await communicator.receive_json_from(timeout=3)
    assert history["type"] == "history"
    await receive(communicator, "presence")
    return history["messages"]


async def closed_by_server(communicator) -> tuple[str, int]:
    """The error frame the server explains a close with, and the close code that follows."""
    frame = await receive(communicator, "error")
    output = await communicator.receive_output(timeout=3)
    assert output["type"] == "websocket.close", output
    return frame["error"], output.get("code")


async def drain(communicator) -> list[dict]:
    """Every frame sent to the client until it has been quiet for a moment."""
    frames = []
    while not await communicator.receive_nothing(timeout=0.3):
        frames.append(await communicator.receive_json_from())
    return frames


async def receive_where(communicator, frame_type: str, **fields) -> dict:
    """The next frame of `frame_type` whose `fields` have the given values, skipping others."""
    while True:
        frame = await receive(communicator, frame_type)
        if all(frame.get(name) == wanted for name, wanted in fields.items()):
            return frame
