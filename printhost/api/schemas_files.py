"""Request and response schemas of the file endpoints: folders, storage, what the
slicer wrote, moves and download links.

Declared like those in schemas.py and added to `schemas.ALL_SCHEMAS` on import, so the
OpenAPI document's components list them next to the others.
"""

from __future__ import annotations

from printhost.api.schemas import (ALL_SCHEMAS, FILE_INFO, Field, Schema,
                                   folder_path_field)
from printhost.store.files import MAX_PATH_BYTES

FOLDER_INFO = Schema("FolderInfo", {
    "path": Field("string", "Path of the folder below the files' root"),
    "modified": Field("string", "UTC ISO 8601 modification time"),
})

STORAGE = Schema("Storage", {
    "used_bytes": Field("integer", "Bytes held by stored files"),
    "quota_bytes": Field("integer", "The storage quota (`server.storage_quota_mb`); null "
                         "without one", nullable=True),
    "free_bytes": Field("integer", "Free space on the state directory's file system"),
    "reserve_bytes": Field("integer", "Free space an upload must leave "
                           "(`server.health_min_free_mb`)"),
})

FILE_LIST = Schema("FileList", {
    "files": Field("array", "Uploaded files in the folder asked for, all folders deep, "
                   "sorted by path", items=FILE_INFO),
    "folders": Field("array", "Folders in it, all deep", items=FOLDER_INFO),
    "storage": Field("object", "Storage used and available", ref=STORAGE),
})

THUMBNAIL_INFO = Schema("ThumbnailInfo", {
    "width": Field("integer", "Pixels"),
    "height": Field("integer", "Pixels"),
    "size": Field("integer", "Bytes of PNG"),
    "url": Field("string", "Where the PNG is served (same authentication as this document)"),
})

_NUM = "number"
GCODE_METADATA = Schema("GCodeMetadata", {
    "slicer": Field("string", "PrusaSlicer, SuperSlicer, OrcaSlicer, Cura or Simplify3D",
                    nullable=True),
    "slicer_version": Field("string", "As the slicer wrote it", nullable=True),
    "estimated_time_s": Field(_NUM, "The slicer's print time estimate, seconds",
                              nullable=True),
    "filament_length_mm": Field(_NUM, "Filament the print needs, all extruders",
                                nullable=True),
    "filament_weight_g": Field(_NUM, "Its weight, when the profile knew the density",
                               nullable=True),
    "filament_type": Field("string", "PLA, PETG, ...", nullable=True),
    "layer_height_mm": Field(_NUM, "Layer height", nullable=True),
    "first_layer_height_mm": Field(_NUM, "First layer's height", nullable=True),
    "object_height_mm": Field(_NUM, "Height of the highest layer", nullable=True),
    "layer_count": Field("integer", "Layers, when the slicer says", nullable=True),
    "first_layer_extruder_temp_c": Field(_NUM, "Nozzle temperature of the first layer",
                                         nullable=True),
    "first_layer_bed_temp_c": Field(_NUM, "Bed temperature of the first layer",
                                    nullable=True),
    "nozzle_diameter_mm": Field(_NUM, "Nozzle the file was sliced for", nullable=True),
    "has_m73": Field("boolean", "The file reports its progress with M73 lines, which the "
                     "job's remaining-time estimate then follows"),
    "thumbnails": Field("array", "Embedded PNG previews", items=THUMBNAIL_INFO),
}, "What the slicer wrote in the file's comments; null where it wrote nothing")

FILE_DETAILS = Schema("FileDetails", {
    **FILE_INFO.fields,
    "sha256": Field("string", "SHA-256 of the file's content, hex"),
    "metadata": Field("object", "What the slicer wrote", ref=GCODE_METADATA),
})

MOVE_REQUEST = Schema("MoveRequest", {
    "source": Field("string", "Path of the file or folder to move or rename",
                    min_length=1, max_length=MAX_PATH_BYTES),
    "dest": Field("string", "Its new path; must not exist (a file keeps a G-code suffix)",
                  min_length=1, max_length=MAX_PATH_BYTES),
})

FOLDER_REQUEST = Schema("FolderRequest", {
    "path": folder_path_field("The folder to create, with any missing parents"),
})

DOWNLOAD_TOKEN = Schema("DownloadToken", {
    "token": Field("string", "One-time token"),
    "url": Field("string", "GET it once, without authentication, before it expires"),
    "expires_at": Field("string", "UTC ISO 8601 time the token expires"),
})


FILE_SCHEMAS = [FOLDER_INFO, STORAGE, FILE_LIST, THUMBNAIL_INFO, GCODE_METADATA, FILE_DETAILS,
                MOVE_REQUEST, FOLDER_REQUEST, DOWNLOAD_TOKEN]
_published = {s.name for s in ALL_SCHEMAS}
ALL_SCHEMAS.extend(s for s in FILE_SCHEMAS if s.name not in _published)
