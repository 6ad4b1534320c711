"""The local stand-in for Fluent Bit: does what fluent-bit/fluent-bit.conf tells Fluent Bit to do, in Python.

    python -m chapter5_operations.prediction_log_pattern.shipper \
        chapter5_operations/prediction_log_pattern/fluent-bit/fluent-bit.conf

Fluent Bit is neither a Debian nor a PyPI package, so the local run (`x-local.command` of the compose service
`shipper`) runs this instead, from the same configuration: the tail input's Path and DB (with ${VAR}s from the
environment, as Fluent Bit expands them), Read_from_Head, Buffer_Max_Size and Skip_Long_Lines, and the parser's
format, time key and time format. Like Fluent Bit's tail it follows each file matching Path by its inode and reads
only whole lines, from the positions saved in its own DB file (a JSON file here, SQLite in Fluent Bit): a file
renamed by a rotation (still matching Path) is read to its end, a new or truncated one from its start. It prints
each record as the stdout output's json_lines does: `{"date": <time>, ...record}`.
A line that is not a record is reported on stderr and counted, never printed as one.
"""

import contextlib
import glob
import json
import os
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

POLL_SECONDS = 0.2
READ_MAX = 8 * 1024**2  # bytes per read: a long backlog is read in steps
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


class ConfigError(ValueError):
    pass


def read_sections(path: Path, environ=os.environ) -> list[tuple[str, dict[str, str]]]:
    """Fluent Bit's classic format: `[SECTION]` headers, indented `Key Value` lines, `#` comments; `${VAR}`
    expanded from `environ` (a missing variable is an error here: Fluent Bit would read an empty path)."""
    sections: list[tuple[str, dict[str, str]]] = []
    for number, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if header := re.fullmatch(r"\[([A-Z_]+)\]", line):
            sections.append((header.group(1), {}))
            continue
        if not sections:
            raise ConfigError(f"{path}:{number}: a key outside any section: {line!r}")
        key, _, value = line.partition(" ")
        for name in re.findall(r"\$\{(\w+)\}", value):
            if name not in environ:
                raise ConfigError(f"{path}:{number}: {key} uses ${{{name}}}, which is not set")
        sections[-1][1][key.lower()] = re.sub(r"\$\{(\w+)\}", lambda m: environ[m.group(1)], value.strip())
    return sections


def size(text: str) -> int:
    """Fluent Bit's unit sizes: 64k, 4M, 1G."""
    match = re.fullmatch(r"(\d+)([KMG]?)B?", text.upper())
    if not match:
        raise ConfigError(f"not a size: {text!r}")
    return int(match.group(1)) * _UNITS[match.group(2)]


def on(text: str | None) -> bool:
    return (text or "off").lower() in ("on", "true", "yes", "1")


@dataclass
class TailConfig:
    path: Path
    db: Path
    read_from_head: bool
    max_line: int
    skip_long_lines: bool
    parser: dict[str, str]  # the [PARSER] section the input names


def load_config(conf: Path, environ=os.environ) -> TailConfig:
    sections = read_sections(conf, environ)
    service = next((s for name, s in sections if name == "SERVICE"), {})
    tails = [s for name, s in sections if name == "INPUT" and s.get("name") == "tail"]
    if len(tails) != 1:
        raise ConfigError(f"{conf}: expected one tail [INPUT], found {len(tails)}")
    tail = tails[0]
    if "db" not in tail:
        raise ConfigError(f"{conf}: the tail input has no DB: its position would be lost at every restart")
    parsers = [s for name, s in read_sections(conf.parent / service["parsers_file"], environ) if name == "PARSER"]
    parser = next((p for p in parsers if p.get("name") == tail.get("parser")), None)
    if parser is None or parser.get("format") != "json":
        raise ConfigError(f"{conf}: the tail input's parser {tail.get('parser')!r} is no json parser")
    return TailConfig(
        path=Path(tail["path"]),
        db=Path(tail["db"]),
        read_from_head=on(tail.get("read_from_head")),
        max_line=size(tail.get("buffer_max_size", "32k")),
        skip_long_lines=on(tail.get("skip_long_lines")),
        parser=parser,
    )


def python_time_format(fluent_format: str) -> str:
    return fluent_format.replace("%L", "%f")  # Fluent Bit's fraction of a second


@dataclass
class Tail:
    """Follow the files of the Path pattern, each by its inode from a saved position, whole lines only."""

    config: TailConfig
    offsets: dict[int, int] = field(default_factory=dict)  # inode -> bytes read
    malformed: int = 0
    skipped: int = 0
    _skipping: set[int] = field(default_factory=set, repr=False)  # inodes inside a line longer than max_line
    _started: bool = field(default=False, repr=False)

    def __post_init__(self):
        if self.config.db.is_file():
            saved = json.loads(self.config.db.read_text())
            self.offsets = {int(inode): offset for inode, offset in saved["files"].items()}
            self._started = True

    def read_lines(self) -> list[bytes]:
        """The whole lines added since the last read (a partial last line waits for its newline): the renamed,
        older file's rest first, then the current file's."""
        found = []
        for name in glob.glob(str(self.config.path)):
            with contextlib.suppress(FileNotFoundError):  # renamed or removed meanwhile: found at the next look
                found.append((os.stat(name), name))
        found.sort(key=lambda item: item[0].st_mtime_ns)
        lines, offsets = [], {}
        for stat, name in found:
            offset = self.offsets.get(stat.st_ino)
            if offset is None:  # a new file: at the first look where Read_from_Head says, later from its start
                offset = 0 if self._started or self.config.read_from_head else stat.st_size
            elif stat.st_size < offset:  # truncated
                offset = 0
            offsets[stat.st_ino] = self._read(name, stat, offset, lines)
        changed = offsets != self.offsets
        self.offsets, self._started = offsets, True  # a file gone (rotated away twice) is forgotten
        if changed:
            self._save()
        return lines

    def _read(self, name: str, stat: os.stat_result, offset: int, lines: list[bytes]) -> int:
        """Add the whole lines of one file from `offset` to `lines`; the new offset."""
        if stat.st_size == offset:
            return offset
        with open(name, "rb") as file:
            file.seek(offset)
            chunk = file.read(min(stat.st_size - offset, max(READ_MAX, self.config.max_line + 1)))
        complete = chunk.rfind(b"\n") + 1
        if not complete:
            if len(chunk) <= self.config.max_line:
                return offset  # a line still being written
            self._long_line()
            self.skipped += stat.st_ino not in self._skipping
            self._skipping.add(stat.st_ino)
            return offset + len(chunk)
        new = chunk[:complete].split(b"\n")[:-1]
        if stat.st_ino in self._skipping:  # the end of a skipped line
            new = new[1:]
            self._skipping.discard(stat.st_ino)
        kept = [line for line in new if len(line) <= self.config.max_line]
        if len(kept) < len(new):
            self._long_line()
        self.skipped += len(new) - len(kept)
        lines += kept
        return offset + complete

    def _long_line(self) -> None:
        if not self.config.skip_long_lines:
            raise ConfigError(f"{self.config.path}: a line longer than Buffer_Max_Size ({self.config.max_line} bytes)")

    def _save(self) -> None:
        self.config.db.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.config.db.with_suffix(".tmp")
        temporary.write_text(json.dumps({"path": str(self.config.path), "files": self.offsets}))
        temporary.replace(self.config.db)  # whole or not at all

    def records(self) -> list[dict]:
        """The new lines parsed as the parser says; one that is not a JSON object with its time is counted."""
        time_key = self.config.parser.get("time_key")
        time_format = python_time_format(self.config.parser.get("time_format", ""))
        parsed = []
        for line in self.read_lines():
            try:
                record = json.loads(line)
                if time_key:
                    when = datetime.strptime(record[time_key], time_format).replace(tzinfo=UTC)
                    record = {"date": when.timestamp(), **record}
            except (ValueError, KeyError, TypeError) as error:
                self.malformed += 1
                print(f"shipper: not a record ({error}): {line[:200]!r}", file=sys.stderr, flush=True)
                continue
            parsed.append(record)
        return parsed


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m chapter5_operations.prediction_log_pattern.shipper FLUENT_BIT_CONF", file=sys.stderr)
        return 2
    try:
        tail = Tail(load_config(Path(args[0])))
    except (ConfigError, OSError, KeyError) as error:
        print(f"shipper: {error}", file=sys.stderr)
        return 1
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    print(f"shipper: tailing {tail.config.path} (positions in {tail.config.db})", flush=True)
    while True:
        last = bool(stopping)  # one more read after a stop signal: what was written before it is shipped
        for record in tail.records():
            print(json.dumps(record, separators=(",", ":")), flush=True)
        if last:
            return 0
        time.sleep(POLL_SECONDS)


if __name__ == "__main__":
    sys.exit(main())
