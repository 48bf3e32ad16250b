"""``cloudfilm serve`` runs the HL7 listener only when ``[hl7] port`` is set."""

from __future__ import annotations

from pathlib import Path

import pytest

from pacs.archive import Archive
from pacs.hl7 import Hl7Listener
from pacs.settings import Settings, load_settings
from tests.pacs.hl7.support import connected, orm
from viewer_api.server import SERVICE_FACTORIES, hl7_listener


def test_hl7_listener_is_a_serve_service_when_a_port_is_set(tmp_path: Path) -> None:
    assert hl7_listener in SERVICE_FACTORIES
    with Archive.open(Settings(data_dir=tmp_path / "a")) as archive:
        assert hl7_listener(archive) is None  # off by default
    with Archive.open(Settings(data_dir=tmp_path / "b", hl7_port=0, hl7_host="127.0.0.1")) as archive:
        service = hl7_listener(archive)
        assert isinstance(service, Hl7Listener)
        service.start()
        try:
            with connected(service.port) as client:
                assert client.send(orm("S1", "SERVE1")).code == "AA"
        finally:
            service.stop()


def test_hl7_settings_from_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "cloudfilm.toml"
    config.write_text("[hl7]\nport = 2575\nhost = '127.0.0.1'\nidle_timeout = 30\nmax_message_bytes = 65536\n")
    monkeypatch.setenv("CLOUDFILM_CONFIG", str(config))
    settings = load_settings()
    assert (settings.hl7_port, settings.hl7_host, settings.hl7_idle_timeout, settings.hl7_max_message_bytes) == \
        (2575, "127.0.0.1", 30.0, 65536)
