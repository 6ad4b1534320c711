"""Read an HAProxy configuration, so that tests can tie its numbers to the Istio objects that carry the same policy.

Chapter 6's traffic policies run on Istio in Kubernetes and on HAProxy locally and in compose; each pattern has a
test that reads both and checks that every number agrees (a connection limit, a weight, a timeout):

    config = HAProxyConfig.read("chapter6_operation_management/online_ab_pattern/haproxy.cfg")
    config.servers("models")          # {"svc": ["127.0.0.1:8001", "weight", "60", ...], ...}
    config.option("models", "server", "svc", "weight")   # "60"
    config.seconds("defaults", "timeout", "server")      # 10.0
"""

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

SECTIONS = ("global", "defaults", "frontend", "backend", "listen", "resolvers", "peers", "userlist", "program")
UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


@dataclass
class HAProxyConfig:
    # "global", "defaults" (the last unnamed one) or a proxy's name -> its directives, each a list of words
    sections: dict[str, list[list[str]]] = field(default_factory=dict)

    @classmethod
    def read(cls, path: str | Path) -> "HAProxyConfig":
        config, current = cls(), None
        for line in Path(path).read_text().splitlines():
            line = re.split(r"(?<!\\)#", line, maxsplit=1)[0].strip()
            if not line:
                continue
            words = shlex.split(line, posix=True)
            if words[0] in SECTIONS:
                current = words[1] if len(words) > 1 and words[0] not in ("global", "defaults") else words[0]
                config.sections.setdefault(current, [])
            elif current is None:
                raise ValueError(f"{path}: {line!r} is outside any section")
            else:
                config.sections[current].append(words)
        return config

    def directives(self, section: str, *keyword: str) -> list[list[str]]:
        """The directives of `section` that start with the words `keyword`, without them."""
        found = [words[len(keyword) :] for words in self.sections[section] if words[: len(keyword)] == list(keyword)]
        return found

    def value(self, section: str, *keyword: str) -> str:
        """The one argument of a directive that appears once in `section`, e.g. value("iris", "maxconn")."""
        found = self.directives(section, *keyword)
        if len(found) != 1 or len(found[0]) != 1:
            raise KeyError(f"{' '.join(keyword)!r} in {section!r}: expected one value, found {found}")
        return found[0][0]

    def servers(self, section: str) -> dict[str, list[str]]:
        """Server name -> its address and options."""
        return {words[0]: words[1:] for words in self.directives(section, "server")}

    def server_option(self, section: str, server: str, option: str) -> str:
        """The value after `option` on a server line (`weight`, `maxconn`, `maxqueue`, `error-limit`...)."""
        words = self.servers(section)[server]
        if option not in words[1:-1]:
            raise KeyError(f"server {server!r} of {section!r} has no {option!r}: {words}")
        return words[words.index(option, 1) + 1]

    def seconds(self, section: str, *keyword: str) -> float:
        """A time value (HAProxy's default unit is ms): value("defaults", "timeout", "server") as seconds."""
        return to_seconds(self.value(section, *keyword))


def to_seconds(text: str) -> float:
    """HAProxy's `500`, `500ms`, `10s`, `10m` (and Istio's `10s`, `1m`) as seconds."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(us|ms|s|m|h|d)?", text.strip())
    if not match:
        raise ValueError(f"not a time: {text!r}")
    return float(match.group(1)) * UNITS[match.group(2) or "ms"]
