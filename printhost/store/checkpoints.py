"""The running job's checkpoint on disk: where to restart it after a power loss.

The control process computes the checkpoint (`control/checkpoint.py`) and publishes
it in its status; it never writes to disk itself (its loop must not wait on an SD
card). The supervisor saves it here every few seconds while a job prints, one small
JSON file replaced atomically (temp file, fsync, rename, directory fsync), so after a
power cut the file holds the last checkpoint whole, or the one before. Only one job
prints at a time, so there is one file; it is removed when the job ends by itself
(completed, cancelled, failed) and kept when the job was interrupted.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from printhost.store.atomic import replace_file

log = logging.getLogger(__name__)

FILENAME = "checkpoint.json"


class CheckpointStore:
    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.path = Path(state_dir) / FILENAME

    def save(self, checkpoint: dict[str, Any]) -> None:
        replace_file(self.path, json.dumps(checkpoint, separators=(",", ":")).encode(), 0o600)

    def load(self, job_id: str | None = None) -> dict[str, Any] | None:
        """The saved checkpoint (of `job_id`, when given), or None. A file that cannot be
        read or is not a checkpoint counts as none (and is logged)."""
        try:
            data = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("checkpoint %s not usable: %s", self.path, exc)
            return None
        if not isinstance(data, dict) or not isinstance(data.get("resume_point"), dict):
            log.warning("checkpoint %s not usable: no resume point", self.path)
            return None
        if job_id is not None and data.get("job_id") != job_id:
            return None
        return data

    def clear(self, job_id: str | None = None) -> None:
        """Remove the checkpoint (only if it is `job_id`'s, when given)."""
        if job_id is not None:
            current = self.load()
            if current is not None and current.get("job_id") != job_id:
                return
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


__all__ = ["CheckpointStore", "FILENAME"]
