"""faster-whisper's device and compute type: `auto` is CUDA when CTranslate2 sees a device, else the CPU."""

from __future__ import annotations

import pytest

from agent.config import ConfigError, load_settings
from agent.providers.device import DeviceError, resolve_compute_type, resolve_device

CPU_TYPES = {"float32", "int8", "int8_float32", "int16"}
CUDA_TYPES = {"float32", "float16", "int8", "int8_float16"}


def supported(device: str) -> set[str]:
    return CPU_TYPES if device == "cpu" else CUDA_TYPES


@pytest.mark.parametrize(
    ("requested", "cuda", "device"),
    [("auto", 0, "cpu"), ("auto", 1, "cuda"), ("cpu", 2, "cpu"), ("cuda", 1, "cuda")],
)
def test_device_resolution(requested: str, cuda: int, device: str) -> None:
    assert resolve_device(requested, cuda_devices=lambda: cuda) == device


def test_cuda_without_a_device_is_refused() -> None:
    with pytest.raises(DeviceError, match="no CUDA device"):
        resolve_device("cuda", cuda_devices=lambda: 0)


def test_this_machine_resolves_auto_from_ctranslate2() -> None:
    import ctranslate2

    expected = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    assert resolve_device("auto") == expected


def test_compute_type_must_run_on_the_device() -> None:
    assert resolve_compute_type("cpu", "int8", supported=supported) == "int8"
    assert resolve_compute_type("cuda", "float16", supported=supported) == "float16"
    assert resolve_compute_type("cpu", "default", supported=supported) == "default"
    with pytest.raises(DeviceError, match=r"float16.*does not run on cpu.*int8"):
        resolve_compute_type("cpu", "float16", supported=supported)


def test_settings_take_the_device_from_env_and_refuse_an_unknown_one() -> None:
    assert load_settings(env={}).speech.stt_device == "auto"
    assert load_settings(env={"WACALL_SPEECH__STT_DEVICE": "cpu"}).speech.stt_device == "cpu"
    with pytest.raises(ConfigError, match=r"speech\.stt_device.*WACALL_SPEECH__STT_DEVICE"):
        load_settings(env={"WACALL_SPEECH__STT_DEVICE": "tpu"})
