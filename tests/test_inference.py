"""pyramidal.inference: restoring one image, whatever its size (down to 1×1) and NumPy layout; other images and
arrays are refused with a PyramidalError."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyramidal.checkpoint import load_weights
from pyramidal.errors import OptionError, PyramidalError
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


@pytest.mark.parametrize("image", [torch.zeros(3, 0, 8, dtype=torch.uint8), np.zeros((0, 4, 3), np.uint8),
                                   torch.zeros(3, 8, 8), torch.zeros(1, 3, 8, 8, dtype=torch.uint8)],
                         ids=["empty tensor", "empty array", "float tensor", "batch tensor"])
def test_restore_image_refuses_with_a_pyramidal_error(image, weights):
    from pyramidal.checkpoint import load_weights
    from pyramidal.inference import restore_image, restore_images

    model = load_weights(weights)
    with pytest.raises(PyramidalError):
        restore_image(model, image, device="cpu", precision="fp32")
    with pytest.raises(PyramidalError):
        restore_images(model, [image], device="cpu", precision="fp32")


def test_restore_array_takes_float64_and_refuses_integers(weights):
    from pyramidal.checkpoint import load_weights
    from pyramidal.inference import restore_array

    model = load_weights(weights)
    out = restore_array(model, torch.zeros(3, 8, 8, dtype=torch.float64), device="cpu", precision="fp32")
    assert out.dtype == torch.float32 and out.shape == (3, 8, 8)
    with pytest.raises(PyramidalError, match="takes floats"):
        restore_array(model, torch.zeros(3, 8, 8, dtype=torch.uint8), device="cpu", precision="fp32")
    flipped = np.zeros((3, 8, 10), ">f8")[:, ::-1, ::2]  # a NumPy view: any layout, any byte order
    assert restore_array(model, flipped, device="cpu", precision="fp32").shape == (3, 8, 5)
    for other in ([[0.0]], np.zeros((3, 8, 8), np.uint8)):
        with pytest.raises(PyramidalError, match="restore_array takes a 3×H×W tensor"):
            restore_array(model, other, device="cpu", precision="fp32")
