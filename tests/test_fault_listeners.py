"""Listeners bind loopback unless configured (issue 8.7)."""

import socket
import urllib.request

import pytest

from rllib_av.envs.carla_settings import CarlaSettings
from rllib_av.monitoring.exporter import HealthExporter
from rllib_av.monitoring.monitoring_settings import MonitoringSettings


def _non_loopback_ip():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent; picks the outward interface
        except OSError:
            return None
        ip = s.getsockname()[0]
    return None if ip.startswith("127.") else ip


def test_defaults_are_loopback():
    assert MonitoringSettings().exporter_host == "127.0.0.1"
    assert CarlaSettings().host == "127.0.0.1"


def test_exporter_listens_on_loopback_only_by_default():
    exporter = HealthExporter("listen-test", port=0)
    try:
        assert exporter.host == "127.0.0.1"
        body = urllib.request.urlopen(f"http://127.0.0.1:{exporter.port}/metrics", timeout=5).read()
        assert b"rllib_av_env_steps_total" in body
        ip = _non_loopback_ip()
        if ip is None:
            pytest.skip("no non-loopback interface to probe")
        with pytest.raises(OSError):
            socket.create_connection((ip, exporter.port), timeout=2).close()
    finally:
        exporter.close()


def test_exporter_binds_where_configured():
    ip = _non_loopback_ip()
    if ip is None:
        pytest.skip("no non-loopback interface")
    exporter = HealthExporter("listen-test", host=ip, port=0)
    try:
        socket.create_connection((ip, exporter.port), timeout=2).close()
    finally:
        exporter.close()
