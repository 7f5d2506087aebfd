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
