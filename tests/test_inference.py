"""pyramidal.inference: restoring one image, whatever its size (down to 1×1) and NumPy layout."""

from __future__ import annotations

import numpy as np
import pytest

from pyramidal.checkpoint import load_weights
from pyramidal.errors import OptionError
from pyramidal.inference import restore_image


def test_whole_image_mode_restores_tiny_images_api(weights):
    model = load_weights(weights)
    for h, w in ((1, 1), (3, 5), (20, 30)):
        img = np.random.default_rng(h).integers(0, 256, (h, w, 3), dtype=np.uint8)
        for tile in (None, 0):
            assert restore_image(model, img, tile=tile, device="cpu", precision="fp32").shape == (h, w, 3)
        # A small tile with the default overlap works too: the default is at most half a tile.
        assert restore_image(model, img, tile=8, device="cpu", precision="fp32").shape == (h, w, 3)
    with pytest.raises(OptionError, match=r"overlap=16: must be smaller than tile=16"):
        restore_image(model, img, tile=16, overlap=16)


def test_restore_image_accepts_any_numpy_layout(weights):
    model = load_weights(weights)
    img = np.random.default_rng(0).integers(0, 256, (20, 33, 3), dtype=np.uint8)
    for view in (img[..., ::-1], img[::-1], img[:, ::2], np.asfortranarray(img)):
        expected = restore_image(model, np.ascontiguousarray(view), device="cpu", precision="fp32")
        assert np.array_equal(restore_image(model, view, device="cpu", precision="fp32"), expected)
    readonly = img.copy()
    readonly.flags.writeable = False
    assert restore_image(model, readonly, device="cpu", precision="fp32").shape == img.shape
