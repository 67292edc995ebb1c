"""Workflows: ComfyUI's API-format JSON as the one file format, run by our own executor.

``load_workflow`` reads API or UI format; ``Executor`` validates and runs a graph of our four
node types plus ComfyUI's LoadImage, SaveImage and PreviewImage, with a ``ResultCache`` so an
unchanged node is never paid for twice; ``run_batch`` runs one workflow over many items.
"""

from .batch import DONE_MARKER, BatchItem, BatchReport, load_batch_items, run_batch
from .cache import ResultCache, cache_key, default_cache_dir, image_digest
from .catalog import known_types, node_info
from .executor import Executor, NodeEvent, RunReport
from .graph import Workflow, WorkflowError, load_workflow
from .uiformat import api_to_ui, ui_to_api

__all__ = [
    "load_workflow", "Workflow", "WorkflowError", "api_to_ui", "ui_to_api",
    "ResultCache", "default_cache_dir", "cache_key", "image_digest",
    "Executor", "RunReport", "NodeEvent",
    "BatchItem", "BatchReport", "load_batch_items", "run_batch", "DONE_MARKER",
    "known_types", "node_info",
]
