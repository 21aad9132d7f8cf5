"""Load-time rewrite of an int8 file for x86 CPUs without VNNI: s8 weights → u8 with zero point 128.

onnxruntime's u8×s8 kernels on such CPUs (AVX2, AVX-512 without VNNI) multiply with
``pmaddubsw``, which adds two u8·s8 products into a *saturating* int16, so the file computes a
different function there than on the CPU it was validated on. Its u8×u8 kernels widen both
operands to int16 first and accumulate in int32: no saturation. Shifting every int8 weight
``w`` to ``w + 128`` (flip the top bit) with zero point ``z + 128`` leaves ``w - z`` unchanged, so
the integer products, and the embeddings, are the exact ones the export validated.

The int8 tensors of our files are only the int8 MatMul weights (MatMulInteger,
MatMulIntegerToFloat; QAttention in folders exported before per-row int8) and their zero
points (the exporter checks and records how many), so the rewrite flips *every* INT8 initializer.
It edits the protobuf wire format directly, standard library and numpy only: the runtime must not
need the ``onnx`` package.
"""

from __future__ import annotations

import numpy as np

from ..errors import ModelLoadError

# onnx.proto field numbers and TensorProto.DataType values
MODEL_GRAPH = 7
GRAPH_INITIALIZER = 5
TENSOR_DATA_TYPE = 2
TENSOR_INT32_DATA = 5
TENSOR_RAW_DATA = 9
TENSOR_DATA_LOCATION = 14
INT8 = 3
UINT8 = 2


def _varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _fields(buf: memoryview, start: int, end: int):  # type: ignore[no-untyped-def]
    """(field number, wire type, payload start, payload end, field start) for each field."""
    pos = start
    while pos < end:
        first = pos
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, after = _varint(buf, pos)
        elif wire == 1:
            after = pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            after = pos + length
        elif wire == 5:
            after = pos + 4
        else:
            raise ModelLoadError(f"int8 rewrite: unsupported protobuf wire type {wire}")
        yield number, wire, pos, after, first
        pos = after


def _field(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | 2) + _encode_varint(len(payload)) + payload


def _int8_values(buf: memoryview, start: int, end: int) -> np.ndarray | None:
    """The values of an INT8 TensorProto (raw_data or int32_data), or None if it is not INT8."""
    dtype = None
    raw: bytes | None = None
    ints: list[int] = []
    for number, wire, s, e, _ in _fields(buf, start, end):
        if number == TENSOR_DATA_TYPE:
            dtype = _varint(buf, s)[0]
        elif number == TENSOR_RAW_DATA:
            raw = bytes(buf[s:e])
        elif number == TENSOR_DATA_LOCATION and _varint(buf, s)[0] != 0:
            raise ModelLoadError("int8 rewrite: weights stored outside the .onnx file are not supported")
        elif number == TENSOR_INT32_DATA:
            if wire == 2:  # packed
                p = s
                while p < e:
                    v, p = _varint(buf, p)
                    ints.append(v)
            else:
                ints.append(_varint(buf, s)[0])
    if dtype != INT8:
        return None
    if raw is not None:
        return np.frombuffer(raw, dtype=np.int8)
    # int32_data holds sign-extended 64-bit varints
    return np.array([v - (1 << 64) if v >= 1 << 63 else v for v in ints], dtype=np.int64).astype(np.int8)


def _shift_tensor(buf: memoryview, start: int, end: int, values: np.ndarray) -> bytes:
    keep = b"".join(
        bytes(buf[f:e])
        for n, _, _, e, f in _fields(buf, start, end)
        if n not in (TENSOR_DATA_TYPE, TENSOR_RAW_DATA, TENSOR_INT32_DATA)
    )
    shifted = (values.view(np.uint8) ^ 0x80).tobytes()  # w + 128 in two's complement
    return (
        keep
        + _encode_varint(TENSOR_DATA_TYPE << 3)
        + _encode_varint(UINT8)
        + _field(TENSOR_RAW_DATA, shifted)
    )


def shift_int8_weights(model: bytes) -> tuple[bytes, int]:
    """``model`` (a serialized ONNX ModelProto) with every INT8 initializer shifted to UINT8
    (``w + 128``); returns the new bytes and how many tensors were shifted."""
    buf = memoryview(model)
    out = bytearray()
    shifted = 0
    for number, _, s, e, f in _fields(buf, 0, len(buf)):
        if number != MODEL_GRAPH:
            out += buf[f:e]
            continue
        graph = bytearray()
        for gn, _, gs, ge, gf in _fields(buf, s, e):
            values = _int8_values(buf, gs, ge) if gn == GRAPH_INITIALIZER else None
            if values is None:
                graph += buf[gf:ge]
            else:
                graph += _field(GRAPH_INITIALIZER, _shift_tensor(buf, gs, ge, values))
                shifted += 1
        out += _field(MODEL_GRAPH, bytes(graph))
    return bytes(out), shifted
