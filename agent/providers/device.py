"""Where faster-whisper runs and with which number format.

`auto` means CUDA when CTranslate2 sees a CUDA device, else the CPU: the same settings then work on a laptop,
on CI (no GPU) and on a GPU host. A compute type the device cannot run is refused at start-up with the ones
it can, instead of CTranslate2's bare ValueError on the first load.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal

Device = Literal["cpu", "cuda"]
DEVICES = ("auto", "cpu", "cuda")


class DeviceError(ValueError):
    """A device or compute type this machine cannot provide."""


def _cuda_devices() -> int:
    import ctranslate2

    return int(ctranslate2.get_cuda_device_count())


def _supported(device: Device) -> Iterable[str]:
    import ctranslate2

    return ctranslate2.get_supported_compute_types(device)


def resolve_device(requested: str, *, cuda_devices: Callable[[], int] = _cuda_devices) -> Device:
    if requested not in DEVICES:
        raise DeviceError(f"speech.stt_device must be one of {', '.join(DEVICES)}, got {requested!r}")
    if requested == "cpu":
        return "cpu"
    has_cuda = cuda_devices() > 0
    if requested == "cuda" and not has_cuda:
        raise DeviceError("speech.stt_device is cuda, but CTranslate2 finds no CUDA device (use auto or cpu)")
    return "cuda" if has_cuda else "cpu"


def resolve_compute_type(
    device: Device, requested: str, *, supported: Callable[[Device], Iterable[str]] = _supported
) -> str:
    """`requested` if the device runs it ("default" and "auto" are CTranslate2's own choices)."""
    if requested in ("default", "auto"):
        return requested
    available = sorted(supported(device))
    if requested not in available:
        raise DeviceError(
            f"speech.stt_compute_type {requested!r} does not run on {device}; it runs {', '.join(available)}"
        )
    return requested
