"""`--device`: auto tries CUDA, then Apple's MPS, then the CPU; any device type the installed torch reports as
available is accepted; one that is not available is one line. Availability is monkeypatched: no hardware needed."""

from __future__ import annotations

import pytest
import torch

from pyramidal.cli import main
from pyramidal.device import resolve_device, resolve_precision
from pyramidal.errors import PyramidalError


@pytest.fixture
def available(monkeypatch):
    """Set which accelerators torch reports: available("mps") makes MPS (only) available."""

    def set_available(*kinds: str, cuda_count: int = 1) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: "cuda" in kinds)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda_count if "cuda" in kinds else 0)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: "mps" in kinds)
        monkeypatch.setattr(torch.xpu, "is_available", lambda: "xpu" in kinds)

    return set_available


@pytest.mark.parametrize("kinds, expected", [
    ((), "cpu"),
    (("mps",), "mps"),
    (("cuda",), "cuda"),
    (("cuda", "mps"), "cuda"),  # CUDA first
    (("xpu",), "cpu"),  # auto tries cuda and mps; other types are taken when named
])
def test_auto_tries_cuda_then_mps_then_cpu(available, kinds, expected):
    available(*kinds)
    assert resolve_device("auto") == torch.device(expected)


def test_mps_and_other_available_types_are_accepted(available):
    available("mps", "xpu")
    assert resolve_device("mps") == torch.device("mps")
    assert resolve_device("xpu") == torch.device("xpu")
    assert resolve_device("MPS") == torch.device("mps")  # as typed on a Mac keyboard
    assert resolve_precision("auto", torch.device("mps")) == "fp32"
    assert resolve_precision("fp16", torch.device("mps")) == "fp16"  # fp16 is refused on the CPU only


@pytest.mark.parametrize("spec, message", [
    ("mps", "device='mps': no MPS device is available here"),
    ("cuda", "device='cuda': no CUDA device is available here"),
    ("xpu", "device='xpu': no XPU device is available here"),
    ("tpu", "device='tpu': not a device torch knows"),
    ("gpu", "device='gpu': not a device torch knows"),
])
def test_an_unavailable_or_unknown_type_is_one_line(available, spec, message):
    available()
    with pytest.raises(PyramidalError, match=message) as raised:
        resolve_device(spec)
    assert "\n" not in str(raised.value) and "available: auto, cpu" in str(raised.value).replace(" here:", ":")
    assert raised.value.flags.startswith(f"--device {spec}: ")  # the command line names the flag


def test_a_gpu_index_past_the_devices_is_one_line(available):
    available("cuda", cuda_count=2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(PyramidalError, match="device='cuda:2': there are 2 cuda device"):
        resolve_device("cuda:2")


def test_commands_refuse_an_unavailable_device_in_one_line(available, tmp_path, capsys):
    available()
    code = main(["restore", "--task", "noise", str(tmp_path / "x.png"), "-o", str(tmp_path / "out"),
                 "--device", "mps"])
    _, err = capsys.readouterr()
    assert code == 2 and err.strip().count("\n") == 0 and "no MPS device is available" in err
