"""Turn an image recipe into an OCI archive (cached), ready for `Testbed.import_image`."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

from corpus.images import DEFAULT_CACHE, ImageRecipe, app_dir, build_base, stage_app_layer
from corpus.mirror import find_debian_mirror
from testbed.oci import BuiltImage, ImageConfig, build_image_archive

log = logging.getLogger(__name__)


def _app_hash(recipe: ImageRecipe) -> str:
    h = hashlib.sha256()
    root = app_dir(recipe)
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:12]


def build_image(recipe: ImageRecipe, cache: Path = DEFAULT_CACHE) -> BuiltImage:
    """Base rootfs (cached debootstrap) + app layer → OCI archive; rebuilt only when either changes."""
    mirror = find_debian_mirror()
    base = build_base(recipe, cache, mirror)
    config = ImageConfig(labels={"org.opencontainers.image.title": recipe.name}, working_dir="/opt/app")
    config_hash = hashlib.sha256(repr(config).encode()).hexdigest()[:6]
    key = f"{recipe.base_key(mirror)}-{_app_hash(recipe)}-{config_hash}"
    archive = cache / "images" / f"{recipe.name}-{key}.tar"
    meta = archive.with_suffix(".json")
    if archive.is_file() and meta.is_file():
        m = json.loads(meta.read_text())
        return BuiltImage(name=m["name"], archive=archive, manifest_digest=m["manifest"],
                          config_digest=m["config"], layer_digests=tuple(m["layers"]))
    for old in archive.parent.glob(f"{recipe.name}-*"):
        old.unlink()
    stage = cache / "stage" / f"{recipe.name}-{os.getpid()}"
    stage_app_layer(recipe, stage)
    # Real mtimes, not a normalised 0: Python checks each .pyc against its source's mtime, and an
    # image whose mtimes were zeroed makes every import rewrite its .pyc (a trace artefact).
    built = build_image_archive(recipe.ref, [base, stage], archive, config, mtime=None)
    shutil.rmtree(stage, ignore_errors=True)
    tmp = meta.with_suffix(f".json.{os.getpid()}")
    tmp.write_text(json.dumps({"name": built.name, "manifest": built.manifest_digest,
                               "config": built.config_digest, "layers": list(built.layer_digests)}))
    os.replace(tmp, meta)
    log.info("image built image=%s digest=%s archive=%s", recipe.name, built.manifest_digest, archive)
    return built
