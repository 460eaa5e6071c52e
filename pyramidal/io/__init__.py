"""Files in and out: the one image reader and writer, atomic writes, JSON and text reports, input folders.

Every command reads images through `read_image` (or `read_rgb`, its RGB view for the data pipeline), so
a photograph looks the same to `degrade`, `restore`, training and evaluation: EXIF orientation applied,
16-bit scaled to 8-bit, palette and grayscale expanded, alpha kept aside. A file that cannot be read
gives one PyramidalError line, "<file>: <reason>".

The package's parts, each importing only the ones before it: `files` (atomic writes, JSON, TOML, text,
numbers for reports), `plan` (`OutputPlan`: every output checked before the work), `metadata` (EXIF, ICC,
resolution and PNG colour chunks), `images` (reading, encoding and writing images and masks) and `folders`
(`scan_images`, `expand_inputs`). The names below are the I/O module's public face: import them from here.
"""

from pyramidal.io.files import (
    OutputExists,
    atomic_write,
    format_number,
    jsonable,
    missing_folders,
    read_json,
    remove_empty_folders,
    to_toml,
    write_json,
    write_text,
)
from pyramidal.io.folders import expand_inputs, scan_images
from pyramidal.io.images import (
    DEFAULT_QUALITY,
    FORMATS,
    IMAGE_SUFFIXES,
    LOSSY_SUFFIXES,
    LoadedImage,
    NonFinitePixels,
    encode_image,
    format_for,
    image_problem,
    load_pil,
    read_image,
    read_mask,
    read_rgb,
    special_file,
    to_pil,
    write_image,
    write_mask,
)
from pyramidal.io.metadata import (
    EXIF_HEADER,
    FORMAT_METADATA,
    ImageMetadata,
    icc_colour_space,
    image_metadata,
)
from pyramidal.io.plan import OutputPlan, folder_problem

__all__ = [
    # files
    "OutputExists", "atomic_write", "format_number", "jsonable", "missing_folders", "read_json",
    "remove_empty_folders", "to_toml", "write_json", "write_text",
    # plan
    "OutputPlan", "folder_problem",
    # metadata
    "EXIF_HEADER", "FORMAT_METADATA", "ImageMetadata", "icc_colour_space", "image_metadata",
    # images
    "DEFAULT_QUALITY", "FORMATS", "IMAGE_SUFFIXES", "LOSSY_SUFFIXES", "LoadedImage", "NonFinitePixels",
    "encode_image", "format_for", "image_problem", "load_pil", "read_image", "read_mask", "read_rgb",
    "special_file", "to_pil", "write_image", "write_mask",
    # folders
    "expand_inputs", "scan_images",
]
