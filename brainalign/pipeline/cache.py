"""Stage cache: each stage's output lives under a hash of the configuration it depends on.

``<out>/cache/<stage>-<hash>/`` holds a stage's files; ``complete.json`` inside it is written
last, after an atomic rename from a private build folder, so an interrupted run never leaves
a folder that reads as finished, and a re-run resumes at the first stage not complete.
Changing a key reruns only the stages that depend on it (see
:data:`brainalign.pipeline.config.STAGE_DEPENDENCIES`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

from brainalign.pipeline.config import stage_config
from brainalign.record.store import partial_dir, remove_stale_partials
from brainalign.provenance import config_hash, provenance_block

logger = logging.getLogger(__name__)


class StageCache:
    """Folders for stage outputs, keyed by configuration hash.

    Parameters
    ----------
    root : path
        The study's output directory; the cache lives in ``root/cache``.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root) / "cache"

    def key(self, stage: str, config: dict[str, Any]) -> str:
        """Hash of the configuration tables ``stage`` depends on."""
        return config_hash({"stage": stage, "config": stage_config(config, stage)})

    def path(self, stage: str, config: dict[str, Any]) -> Path:
        return self.root / f"{stage}-{self.key(stage, config)}"

    def is_complete(self, stage: str, config: dict[str, Any]) -> bool:
        return (self.path(stage, config) / "complete.json").exists()

    @contextlib.contextmanager
    def build(self, stage: str, config: dict[str, Any]) -> Iterator[Path]:
        """Yield a private folder to write the stage into; publish it only on success."""
        final = self.path(stage, config)
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(final)  # left by a run that was killed
        partial = partial_dir(final)
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        started = time.perf_counter()
        try:
            yield partial
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        block = provenance_block(stage=stage, config=stage_config(config, stage),
                                 config_hash=self.key(stage, config),
                                 wall_s=round(time.perf_counter() - started, 3))
        (partial / "complete.json").write_text(json.dumps(block, indent=2, default=str))
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        logger.info("stage %s written to %s", stage, final)
