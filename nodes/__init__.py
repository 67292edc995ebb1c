"""The core: protocol, client, image codecs, the four operations and the offline server.

Public names are re-exported here; adapters (ComfyUI, the canvas, the runner) import from this
package only.
"""

from .answers import Usage
from .client import Answer, AsyncImageClient, ProgressEvent
from .config import Settings, config_path
from .errors import *  # noqa: F403 - the typed errors are part of the public API
from .errors import __all__ as _error_names
from .operations import ImageResult, TextResult, describe, edit_image, multi_merge, text_to_image
from .protocol import DEFAULT_BASE_URL, DEFAULT_MODEL, QUALITIES, SIZES, ImageRequest, Mode
from .retry import RetryPolicy, Timeouts
from .sync import ImageClient

__all__ = [
    "AsyncImageClient", "ImageClient", "Settings", "config_path", "Timeouts", "RetryPolicy",
    "ImageRequest", "Mode", "SIZES", "QUALITIES", "DEFAULT_MODEL", "DEFAULT_BASE_URL",
    "ImageResult", "TextResult", "Usage", "Answer", "ProgressEvent",
    "text_to_image", "edit_image", "multi_merge", "describe",
    *_error_names,
]
