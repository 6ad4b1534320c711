"""Tensors between services: the array's raw bytes as the body, its shape and dtype in two headers.

    body, headers = encode_tensor(batch)          # the caller: (N, 3, 32, 32) float32 -> 12,288 bytes per image
    await upstream.post("/predict", content=body, headers=headers)
    batch = await read_tensor(request)            # the callee: the same array, or a 415/422 saying what is wrong

    POST /predict
    Content-Type: application/octet-stream
    X-Tensor-Shape: 2,3,32,32
    X-Tensor-Dtype: float32
    <24,576 bytes: little-endian float32, C order>

The bytes are what ONNX's TensorProto carries in `raw_data` (little-endian, row-major), so the receiver takes
them as they are (`np.frombuffer`, no parsing, no copy); JSON would write each float as text (5 to 20 bytes
instead of 4) and parse it back. Headers keep the format readable with curl and any HTTP library, and the body
needs no framing. A body of another media type is a 415; a missing or malformed header, an unknown dtype and a
body whose size is not the shape's are 422s naming the problem.
"""

import math
from collections.abc import Mapping

import numpy as np
from fastapi import Request

from mlpatterns.errors import InvalidInput, UnsupportedMediaType

MEDIA_TYPE = "application/octet-stream"
SHAPE_HEADER = "X-Tensor-Shape"
DTYPE_HEADER = "X-Tensor-Dtype"
MAX_DIMS = 8
# The dtypes a tensor may have on the wire, all little-endian (as ONNX's raw_data), by their numpy names.
DTYPES = {name: np.dtype(name).newbyteorder("<") for name in ("float32", "float64", "int32", "int64", "uint8")}


def encode_tensor(array: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """The body and headers that carry `array` (one of DTYPES)."""
    name = array.dtype.name
    if name not in DTYPES:
        raise ValueError(f"a tensor on the wire is one of {', '.join(DTYPES)}, not {name}")
    body = np.ascontiguousarray(array, dtype=DTYPES[name]).tobytes()
    headers = {
        "Content-Type": MEDIA_TYPE,
        SHAPE_HEADER: ",".join(str(size) for size in array.shape),
        DTYPE_HEADER: name,
    }
    return body, headers


def decode_tensor(body: bytes, headers: Mapping[str, str]) -> np.ndarray:
    """The array that `encode_tensor` sent (read-only: it is the body's own memory), or InvalidInput."""
    shape = _shape(headers.get(SHAPE_HEADER))
    name = headers.get(DTYPE_HEADER)
    if name is None:
        raise InvalidInput(f"the {DTYPE_HEADER} header is missing: the dtype of the tensor, e.g. float32")
    if name not in DTYPES:
        raise InvalidInput(f"{DTYPE_HEADER} must be one of {', '.join(DTYPES)}; got {name[:40]!r}")
    dtype = DTYPES[name]
    expected = math.prod(shape) * dtype.itemsize
    if len(body) != expected:
        size = "x".join(map(str, shape)) or "scalar"
        raise InvalidInput(f"a {name} tensor of shape {size} has {expected} bytes; the body has {len(body)}")
    return np.frombuffer(body, dtype=dtype).reshape(shape)


async def read_tensor(request: Request) -> np.ndarray:
    """The request's body as a tensor: a 415 unless it is `application/octet-stream`, else `decode_tensor`."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != MEDIA_TYPE:
        raise UnsupportedMediaType(
            f"the body must be a tensor ({MEDIA_TYPE} with {SHAPE_HEADER} and {DTYPE_HEADER} headers), "
            f"not {media_type[:60] or 'a body without Content-Type'}"
        )
    return decode_tensor(await request.body(), request.headers)


def _shape(value: str | None) -> tuple[int, ...]:
    example = "e.g. 1,3,32,32"
    if value is None:
        raise InvalidInput(f"the {SHAPE_HEADER} header is missing: the shape of the tensor, {example}")
    parts = value.split(",") if value.strip() else []
    if len(parts) > MAX_DIMS or not all(part.strip().isdigit() and part.isascii() for part in parts):
        raise InvalidInput(
            f"{SHAPE_HEADER} must be up to {MAX_DIMS} sizes (whole numbers) separated by commas, {example}; "
            f"got {value[:40]!r}"
        )
    return tuple(int(part) for part in parts)


def openapi_request(item_shape: list[int], dtype: str) -> dict:
    """`openapi_extra` for a route that reads a tensor: its body and headers in the OpenAPI document (the route
    declares no body parameter, so FastAPI documents none by itself)."""
    shape = ",".join(["N", *map(str, item_shape)])
    return {
        "parameters": [
            {
                "name": SHAPE_HEADER,
                "in": "header",
                "required": True,
                "description": f"The tensor's shape, sizes separated by commas: {shape}.",
                "schema": {"type": "string", "pattern": rf"^\d+(,\d+){{0,{MAX_DIMS - 1}}}$"},
            },
            {
                "name": DTYPE_HEADER,
                "in": "header",
                "required": True,
                "description": f"The tensor's element type ({dtype} for this model), little-endian on the wire.",
                "schema": {"type": "string", "enum": list(DTYPES)},
            },
        ],
        "responses": {
            "415": {
                "description": f"The body is not a tensor ({MEDIA_TYPE}).",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorMessage"}}},
            }
        },
        "requestBody": {
            "required": True,
            "description": f"The tensor's raw bytes, row-major and little-endian: a {shape} {dtype} tensor.",
            "content": {MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
        },
    }
