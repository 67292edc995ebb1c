"""The synchronous client: the async one driven on a private event-loop thread.

One loop for the client's lifetime keeps the connection pool warm between calls; Ctrl-C in the
caller cancels the request in flight.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from typing import Any, Coroutine, Sequence, TypeVar

from PIL import Image

from . import operations
from .client import AsyncImageClient
from .protocol import DEFAULT_DESCRIBE_QUESTION

__all__ = ["ImageClient"]

T = TypeVar("T")


class ImageClient:
    """Blocking form of the four operations. Arguments as :class:`AsyncImageClient`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.aclient = AsyncImageClient(*args, **kwargs)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="gpt-image-client", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"ImageClient({self.aclient.settings!r})"

    @property
    def settings(self):  # noqa: ANN201 - Settings
        return self.aclient.settings

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def text_to_image(self, prompt: str, **kw: Any) -> operations.ImageResult:
        return self._run(operations.text_to_image(self.aclient, prompt, **kw))

    def edit_image(self, image: Image.Image, prompt: str, **kw: Any) -> operations.ImageResult:
        return self._run(operations.edit_image(self.aclient, image, prompt, **kw))

    def multi_merge(self, images: Sequence[Image.Image], prompt: str, **kw: Any) -> operations.ImageResult:
        return self._run(operations.multi_merge(self.aclient, images, prompt, **kw))

    def describe(self, image: Image.Image, question: str = DEFAULT_DESCRIBE_QUESTION, **kw: Any) -> operations.TextResult:
        return self._run(operations.describe(self.aclient, image, question, **kw))

    def close(self) -> None:
        if self._loop.is_running():
            self._run(self.aclient.aclose())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        if not self._loop.is_running() and not self._loop.is_closed():
            self._loop.close()  # its selector holds file descriptors

    def __enter__(self) -> "ImageClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
