"""The reader of HAProxy configurations that ties chapter 6's proxy numbers to their Istio objects."""

import pytest

from mlpatterns.haproxy_config import HAProxyConfig, to_seconds

CONFIG = """
global
    log stdout format raw local0   # to the runner's output
defaults
    mode http
    timeout server 10s
    timeout connect 500
backend iris
    balance random
    server svc "${SVC_ADDRESS}" weight 60 maxconn 100 maxqueue 100 check
    server rf "${RF_ADDRESS}" weight 40
"""


def test_reads_sections_servers_and_times(tmp_path):
    (tmp_path / "haproxy.cfg").write_text(CONFIG)
    config = HAProxyConfig.read(tmp_path / "haproxy.cfg")
    assert config.value("iris", "balance") == "random"
    assert config.seconds("defaults", "timeout", "server") == 10.0
    assert config.seconds("defaults", "timeout", "connect") == 0.5  # HAProxy's default unit is ms
    assert config.servers("iris")["svc"][0] == "${SVC_ADDRESS}"
    assert config.server_option("iris", "svc", "weight") == "60"
    assert config.server_option("iris", "svc", "maxqueue") == "100"
    with pytest.raises(KeyError, match="has no 'maxconn'"):
        config.server_option("iris", "rf", "maxconn")
    with pytest.raises(KeyError, match="expected one value"):
        config.value("iris", "server")


def test_times():
    assert to_seconds("10m") == 600 and to_seconds("1s") == 1 and to_seconds("250ms") == 0.25
    with pytest.raises(ValueError):
        to_seconds("ten")
