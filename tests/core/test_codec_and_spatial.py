"""Image decoding by message fields, and the action convention (uwm_core.image_codec, uwm_core.spatial)."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from uwm_core.image_codec import (RAW_ENCODINGS, ImageDecodeError, decode_compressed, decode_raw, encode_compressed,
                                  encode_raw, raw_image_problem)
from uwm_core.spatial import apply_delta, clamp_delta, delta_between

RGB = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)


@pytest.mark.parametrize("encoding", [e for e in RAW_ENCODINGS if e != "mono8"])
def test_color_encodings_round_trip_with_and_without_row_padding(encoding):
    enc, h, w, step, data = encode_raw(RGB, encoding)
    assert np.array_equal(decode_raw(enc, h, w, step, data), RGB)
    pad = 5
    padded = b"".join(data[r * step:(r + 1) * step] + b"\xff" * pad for r in range(h))
    assert np.array_equal(decode_raw(enc, h, w, step + pad, padded), RGB)


def test_mono8_becomes_grey_rgb():
    grey = RGB[..., 0]
    out = decode_raw("mono8", 5, 7, 7, grey.tobytes())
    assert out.shape == (5, 7, 3) and all(np.array_equal(out[..., c], grey) for c in range(3))


def test_bgr8_channel_order_is_honoured():
    bgr = RGB[..., ::-1].copy()
    assert np.array_equal(decode_raw("bgr8", 5, 7, 21, bgr.tobytes()), RGB)


def test_bad_raw_images_name_the_problem():
    with pytest.raises(ImageDecodeError, match="unsupported image encoding 'yuv422'"):
        decode_raw("yuv422", 5, 7, 14, bytes(70))
    with pytest.raises(ImageDecodeError, match="rgb8 image of 7x5 with step 21 needs 105 bytes, got 50"):
        decode_raw("rgb8", 5, 7, 21, bytes(50))
    assert raw_image_problem("rgb8", 5, 7, 20, 200).startswith("rgb8 image of 7x5 with step 20")  # step < row
    assert raw_image_problem("rgb8", 5, 7, 21, 105) is None
    assert raw_image_problem("rgb8", 0, 0, 0, 0) == "rgb8 image of 0x0: it has no pixels"


def test_compressed_png_is_lossless_and_jpeg_close():
    assert np.array_equal(decode_compressed("png", encode_compressed(RGB, "png")), RGB)
    smooth = np.tile(np.linspace(0, 255, 32, dtype=np.uint8)[None, :, None], (32, 1, 3))
    assert np.abs(decode_compressed("jpeg", encode_compressed(smooth, "jpeg")).astype(int) - smooth).max() < 8
    with pytest.raises(ImageDecodeError, match="cannot decode compressed image"):
        decode_compressed("jpeg", b"not a jpeg")


def test_corrupt_jpeg_data_is_an_error_not_a_garbled_picture():
    yy, xx = np.mgrid[0:120, 0:160]
    smooth = np.stack([xx % 256, yy % 256, (xx + yy) % 256], -1).astype(np.uint8)
    data = bytearray(encode_compressed(smooth, "jpeg"))
    middle = len(data) // 2
    data[middle:middle + 200] = bytes(b ^ 0xFF for b in data[middle:middle + 200])  # libjpeg: "Corrupt JPEG data"
    with pytest.raises(ImageDecodeError, match=r"cannot decode JPEG \(format 'jpeg', \d+ bytes\): Corrupt JPEG data"):
        decode_compressed("jpeg", bytes(data))
    with pytest.raises(ImageDecodeError, match="cannot decode JPEG"):
        decode_compressed("jpeg", encode_compressed(smooth, "jpeg")[:-400])  # truncated


def test_apply_delta_is_base_frame_translation_and_left_multiplied_rotation():
    q0 = Rotation.from_euler("xyz", [0.3, -0.2, 1.0]).as_quat()
    delta = np.array([0.01, -0.02, 0.03, 0.0, 0.0, 0.2])
    p1, q1 = apply_delta([0.5, 0.0, 0.3], q0, delta)
    assert np.allclose(p1, [0.51, -0.02, 0.33])
    expected = Rotation.from_rotvec([0, 0, 0.2]) * Rotation.from_quat(q0)  # R_new = exp(r) * R_old
    assert np.allclose(Rotation.from_quat(q1).as_matrix(), expected.as_matrix())
    assert np.allclose(delta_between([0.5, 0.0, 0.3], q0, p1, q1), delta)


def test_clamp_keeps_direction_and_limits_norms():
    out = clamp_delta([0.3, 0.4, 0.0, 0.0, 0.0, 1.0], max_translation=0.05, max_rotation=0.1)
    assert np.allclose(out[:3], [0.03, 0.04, 0.0]) and np.allclose(out[3:], [0, 0, 0.1])
    small = [0.001, 0, 0, 0.01, 0, 0]
    assert np.allclose(clamp_delta(small, 0.05, 0.1), small)
