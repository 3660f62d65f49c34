"""The brainglobe atlas a 3D scene is drawn in: where it lives, and opening it (downloading it once).

brainrender draws in a brainglobe atlas (``allen_mouse_25um`` by default), which brainglobe downloads into
its folder on first use. A first-time user must get that download, announced before it starts; an offline
one must get one line saying what is missing and how to fix it, not a traceback from inside brainglobe.
The download itself is brainglobe's own (its server, its archive layout); this module only points brainglobe
at a folder and translates its failures. ``brainglobe_dir`` points at atlases elsewhere, e.g. the offline
synthetic one of :mod:`ibl_ephys_data.demo.synthetic_atlas`.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ibl_ephys_data.errors import AtlasUnavailable, InputError

logger = logging.getLogger(__name__)

DEFAULT_ATLAS = "allen_mouse_25um"


def brainglobe_home(brainglobe_dir: str | Path | None = None) -> Path:
    """The folder brainglobe keeps atlases in: ``brainglobe_dir`` or the one of brainglobe's config."""
    if brainglobe_dir is not None:
        return Path(brainglobe_dir).expanduser().absolute()
    from brainglobe_atlasapi import config

    return Path(config.read_config()["default_dirs"]["brainglobe_dir"]).expanduser()


def atlas_available_locally(atlas_name: str = DEFAULT_ATLAS, brainglobe_dir: str | Path | None = None) -> bool:
    """Whether brainglobe has ``atlas_name`` on disk (its ``<name>_v<version>`` folder), so no download."""
    return any(p.is_dir() for p in brainglobe_home(brainglobe_dir).glob(f"{atlas_name}_v*"))


@contextlib.contextmanager
def brainglobe_config(brainglobe_dir: str | Path | None) -> Iterator[None]:
    """Point brainglobe (hence brainrender's ``Scene``, which takes no folder) at ``brainglobe_dir``.

    brainglobe reads its folders from the config file at ``brainglobe_atlasapi.config.CONFIG_PATH`` (set
    once from ``BRAINGLOBE_CONFIG_DIR`` at import); within the block it reads a temporary one naming
    ``brainglobe_dir`` as both its atlas and its download folder (where its version cache goes too).
    """
    if brainglobe_dir is None:
        yield
        return
    from brainglobe_atlasapi import config

    home = str(brainglobe_home(brainglobe_dir))
    with tempfile.TemporaryDirectory(prefix="bg-config-") as tmp:
        path = Path(tmp) / config.CONFIG_FILENAME
        config.write_default_config(path, {"default_dirs": {"brainglobe_dir": home, "interm_download_dir": home}})
        previous = config.CONFIG_PATH
        config.CONFIG_PATH = path
        try:
            yield
        finally:
            config.CONFIG_PATH = previous


def open_atlas(atlas_name: str = DEFAULT_ATLAS, brainglobe_dir: str | Path | None = None,
               regions: Sequence[str] = ()) -> Any:
    """Open a brainglobe atlas without surprises: announce a download, fail in one line when impossible.

    Checks that ``regions`` (acronyms) exist and that their meshes (and the root's) are on disk. Returns a
    ``brainglobe_atlasapi.BrainGlobeAtlas``. Raises ``AtlasUnavailable`` when the atlas is neither on disk
    nor downloadable (brainglobe's server, or the internet, cannot be reached).
    """
    import requests
    from brainglobe_atlasapi import BrainGlobeAtlas

    home = brainglobe_home(brainglobe_dir)
    local = atlas_available_locally(atlas_name, home)
    if not local:
        logger.warning("brainglobe atlas %s is not in %s: downloading it now from brainglobe's server, once",
                       atlas_name, home)
    try:
        with brainglobe_config(home):
            atlas = BrainGlobeAtlas(atlas_name, brainglobe_dir=home, interm_download_dir=home, check_latest=False)
    except (ConnectionError, requests.RequestException, FileNotFoundError) as err:
        # offline, brainglobe raises ConnectionError, or FileNotFoundError for its missing version cache
        if local:
            raise
        raise AtlasUnavailable(
            f"brainglobe atlas {atlas_name} is not in {home} and could not be downloaded ({err}): connect to "
            "the internet once to download it, or pass brainglobe_dir= (--brainglobe-dir) a folder that has it"
        ) from err
    except ValueError as err:
        raise InputError(f"atlas {atlas_name!r}: {err} (brainglobe lists its atlases with "
                         "`brainglobe list`)") from err
    acronyms = atlas.lookup_df["acronym"].to_numpy()
    unknown = [r for r in regions if r not in acronyms]
    if unknown:
        raise InputError(f"regions {unknown} are not in atlas {atlas_name}: pass Allen acronyms such as "
                         f"{', '.join(acronyms[:6])}")
    missing = [r for r in ("root", *regions) if not Path(atlas.meshfile_from_structure(r)).exists()]
    if missing:
        raise AtlasUnavailable(
            f"brainglobe atlas {atlas_name} in {atlas.root_dir} lacks the meshes of {', '.join(missing)}: delete "
            "that folder so brainglobe downloads the atlas again"
        )
    return atlas
