"""Decode and encode camera images by the fields of sensor_msgs/Image and CompressedImage.

Plain functions of (encoding, height, width, step, data) and (format, data): they work on rclpy
messages and on messages deserialised by rosbags alike, and need neither ROS nor cv_bridge.
"""
from __future__ import annotations

import cv2
import numpy as np
import simplejpeg

# encoding -> (channels, conversion to RGB or None when already RGB)
RAW_ENCODINGS = {
    "rgb8": (3, None),
    "bgr8": (3, cv2.COLOR_BGR2RGB),
    "rgba8": (4, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, cv2.COLOR_BGRA2RGB),
    "mono8": (1, cv2.COLOR_GRAY2RGB),
}


JPEG_MAGIC = b"\xff\xd8"  # start of image: whatever the CompressedImage format string says


class ImageDecodeError(ValueError):
    """An image that cannot be decoded; the message names the encoding or the size mismatch."""


def raw_image_problem(encoding: str, height: int, width: int, step: int, num_bytes: int) -> str | None:
    """Why a raw image with these header fields cannot be decoded, or None when it can."""
    if encoding not in RAW_ENCODINGS:
        return f"unsupported image encoding {encoding!r} (supported: {', '.join(RAW_ENCODINGS)})"
    if height <= 0 or width <= 0:
        return f"{encoding} image of {width}x{height}: it has no pixels"
    row_bytes = width * RAW_ENCODINGS[encoding][0]
    if step < row_bytes or num_bytes < step * (height - 1) + row_bytes:
        return f"{encoding} image of {width}x{height} with step {step} needs {step * height} bytes, got {num_bytes}"
    return None


def decode_raw(encoding: str, height: int, width: int, step: int, data) -> np.ndarray:
    """A raw image buffer -> uint8 RGB (height, width, 3), honouring row padding in ``step``."""
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1).view(np.uint8)
    problem = raw_image_problem(encoding, height, width, step, buf.size)
    if problem:
        raise ImageDecodeError(problem)
    channels, conversion = RAW_ENCODINGS[encoding]
    row_bytes = width * channels
    rows = np.lib.stride_tricks.as_strided(buf, shape=(height, row_bytes), strides=(step, 1))
    image = rows.reshape(height, width, channels)
    if conversion is None:
        return np.ascontiguousarray(image)
    return cv2.cvtColor(np.ascontiguousarray(image), conversion)


def decode_compressed(fmt: str, data) -> np.ndarray:
    """A CompressedImage payload (jpeg, png) -> uint8 RGB (H, W, 3).

    JPEG goes through libjpeg-turbo in strict mode (simplejpeg): corrupt data is an error, where
    OpenCV would print libjpeg's warning and return the garbled picture."""
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1).view(np.uint8)
    if buf[:2].tobytes() == JPEG_MAGIC:
        try:
            return simplejpeg.decode_jpeg(buf.tobytes(), colorspace="RGB", strict=True)
        except ValueError as err:
            raise ImageDecodeError(f"cannot decode JPEG (format {fmt!r}, {buf.size} bytes): {err}") from None
    image = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if image is None:
        raise ImageDecodeError(f"cannot decode compressed image (format {fmt!r}, {buf.size} bytes)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def decode_image_msg(msg) -> np.ndarray:
    """sensor_msgs/Image or CompressedImage (rclpy or rosbags object) -> uint8 RGB (H, W, 3)."""
    if hasattr(msg, "encoding"):
        return decode_raw(msg.encoding, msg.height, msg.width, msg.step, msg.data)
    return decode_compressed(msg.format, msg.data)


def encode_raw(rgb: np.ndarray, encoding: str = "rgb8") -> tuple[str, int, int, int, bytes]:
    """uint8 RGB (H, W, 3) -> (encoding, height, width, step, data) for a sensor_msgs/Image."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected uint8 RGB (H, W, 3), got {rgb.dtype} {rgb.shape}")
    inverse = {"rgb8": None, "bgr8": cv2.COLOR_RGB2BGR, "rgba8": cv2.COLOR_RGB2RGBA,
               "bgra8": cv2.COLOR_RGB2BGRA, "mono8": cv2.COLOR_RGB2GRAY}
    if encoding not in inverse:
        raise ImageDecodeError(f"unsupported image encoding {encoding!r} (supported: {', '.join(RAW_ENCODINGS)})")
    image = rgb if inverse[encoding] is None else cv2.cvtColor(rgb, inverse[encoding])
    image = np.ascontiguousarray(image)
    height, width = image.shape[:2]
    return encoding, height, width, image.strides[0], image.tobytes()


def encode_compressed(rgb: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> bytes:
    """uint8 RGB (H, W, 3) -> jpeg/png bytes for a sensor_msgs/CompressedImage."""
    ext = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png"}.get(fmt)
    if ext is None:
        raise ImageDecodeError(f"unsupported compressed format {fmt!r} (supported: jpeg, png)")
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ImageDecodeError(f"cannot encode image as {fmt}")
    return buf.tobytes()
