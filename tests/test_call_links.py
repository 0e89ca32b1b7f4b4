"""Issue 19, deep links: `wacall link` prints the wa.me/call link (spec §6.3) and writes its QR code."""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from agent.cli import build_parser, main
from agent.whatsapp.links import LinkError, call_link


@pytest.mark.parametrize(
    ("number", "payload", "url"),
    [
        ("15550001111", None, "https://wa.me/call/15550001111"),
        ("+1 555-000-1111", "summer-sale", "https://wa.me/call/15550001111?biz_payload=summer-sale"),
        ("15550001111", "a b&c=d/é?", "https://wa.me/call/15550001111?biz_payload=a%20b%26c%3Dd%2F%C3%A9%3F"),
    ],
)
def test_call_link(number: str, payload: str | None, url: str) -> None:
    assert call_link(number, payload) == url


@pytest.mark.parametrize(
    ("number", "payload", "problem"),
    [
        ("call-me", None, "6 to 15 digits"),
        ("1" * 16, None, "6 to 15 digits"),
        ("15550001111", "x" * 513, "longer than 512"),
        ("15550001111", "", "empty"),
        ("15550001111", "tab\there", "control characters"),
    ],
)
def test_bad_link_input(number: str, payload: str | None, problem: str) -> None:
    with pytest.raises(LinkError, match=problem):
        call_link(number, payload)


def test_link_command_prints_the_link_and_writes_a_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "link.png"
    assert main(["link", "--number", "15550001111", "--payload", "summer-sale", "--qr", str(png)]) == 0
    assert capsys.readouterr().out.strip() == "https://wa.me/call/15550001111?biz_payload=summer-sale"
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width == height and 200 <= width <= 1000  # 29 to 33 modules plus the quiet zone, 10 px each
    assert 200 < len(data) < 20_000


def test_link_command_writes_an_svg_with_the_number_from_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WACALL_CONFIG", raising=False)
    monkeypatch.setenv("WACALL_BUSINESS_NUMBER", "+34 600 111 222")
    svg = tmp_path / "poster.SVG"
    assert main(["link", "--payload", "poster-7", "--qr", str(svg)]) == 0
    assert capsys.readouterr().out.strip() == "https://wa.me/call/34600111222?biz_payload=poster-7"
    root = ET.fromstring(svg.read_bytes())
    assert root.tag.endswith("svg") and root.get("width") == root.get("height")
    assert 300 < svg.stat().st_size < 20_000


def test_link_command_refuses_bad_usage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["link", "--number", "15550001111", "--qr", str(tmp_path / "link.jpg")]) == 2
    assert "must end in .png or .svg" in capsys.readouterr().err
    assert not (tmp_path / "link.jpg").exists()
    with pytest.raises(SystemExit):
        main(["link", "--number", "15550001111", "--payload", "x" * 600])
    assert "not a usable payload: longer than 512" in capsys.readouterr().err


def test_simulate_takes_a_payload_and_how_it_arrives() -> None:
    args = build_parser().parse_args(["simulate", "--payload", "summer-sale", "--via", "link"])
    assert (args.payload, args.via) == ("summer-sale", "link")
    assert build_parser().parse_args(["simulate"]).via == "button"
