"""A disk cache of compiled stages, so a new process imports a stage instead of compiling it (torch-free).

One entry per (graph sha256, precision, input shapes, threads, runtime version, CPU): a change of any of
them names another entry, so a wrong one is never reused. An entry is one file: a header (magic line,
then the key as JSON and the payload's size) and the runtime's own exported blob. The header is checked
before the payload is handed to the runtime: an entry whose key differs (a foreign file), whose size is
wrong (a torn copy) or that the runtime refuses is reported in a warning, removed and rebuilt.

Writes go to a temporary file renamed over the entry (atomic); a lock file per entry lets one process
compile while the others started at the same time (Ray actors, Serve replicas) wait and then import.
The folder is kept under a size bound, least recently used entries removed first. See docs/cache.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import mmap
import os
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from deghost.manifest import Artifact, Manifest

try:
    import fcntl
except ImportError:  # not POSIX: no lock, the atomic rename still keeps every entry whole
    fcntl = None

log = logging.getLogger("deghost.runtime")

CACHE_DIR_ENV = "DEGHOST_CACHE_DIR"  # where the cache lives (default: the user's cache folder)
NO_CACHE_ENV = "DEGHOST_NO_CACHE"  # "1": neither read nor write the cache
MAX_GB_ENV = "DEGHOST_CACHE_MAX_GB"  # the folder's size bound
DEFAULT_MAX_GB = 8.0  # the paper preset's stages in fp32 and bf16 take ~4.5 GB
MAGIC = b"deghost compiled stage 1\n"
SUFFIX = ".blob"
STALE_TEMP_S = 3600  # a temporary file this old belongs to a writer that died


@dataclass(frozen=True)
class CacheKey:
    """Everything a compiled stage depends on; `name` is the entry's file name."""

    graph_sha256: str
    precision: str
    shapes: str  # the input shapes compiled for, as JSON ("null": the graph's dynamic shapes)
    threads: int
    runtime: str  # e.g. "openvino 2026.4.1-22982-..."
    cpu: str  # cpu_identity()

    @property
    def name(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:40]


def cpu_identity() -> str:
    """The CPU model and its instruction-set flags (a hash of them): kernels compiled for one CPU may use
    instructions another lacks, so another CPU means another entry."""
    text = platform.machine() + platform.processor()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        wanted = ("vendor_id", "cpu family", "model", "model name", "flags", "Features", "CPU part")
        text += "\n".join(sorted({line for line in lines if line.split(":")[0].strip() in wanted}))
    except OSError:  # not Linux: the platform's names stand for the CPU
        pass
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def default_folder() -> Path:
    """$DEGHOST_CACHE_DIR, else the user's cache folder ($XDG_CACHE_HOME or ~/.cache)/deghost/compiled."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "deghost" / "compiled"


def cache_disabled() -> bool:
    return os.environ.get(NO_CACHE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def open_cache(folder: str | Path | bool | None = None) -> CompiledCache | None:
    """The cache to use: None when turned off (`folder` False, or $DEGHOST_NO_CACHE=1), else the cache in
    `folder` (None or True: `default_folder()`)."""
    if folder is False or cache_disabled():
        return None
    path = default_folder() if folder in (None, True) else Path(folder)
    max_gb = float(os.environ.get(MAX_GB_ENV) or DEFAULT_MAX_GB)
    return CompiledCache(path, int(max_gb * 2**30))


class CompiledCache:
    """Entries in `folder`, at most `max_bytes` in all (see the module docstring)."""

    def __init__(self, folder: Path, max_bytes: int):
        self.folder, self.max_bytes = Path(folder), max_bytes

    def path(self, key: CacheKey) -> Path:
        return self.folder / f"{key.name}{SUFFIX}"

    def verified(self, manifest: Manifest, artifact: Artifact) -> Path:
        """`manifest.verify(artifact)` (the file's sha256 against the manifest's), remembered for the file as it
        is now (path, size, modification time, inode), as git's index does: hashing the paper encoder's
        1.07 GB on every start costs as much as compiling it. A file changed since is hashed again."""
        path = manifest.file_of(artifact)
        try:
            stat = path.stat()
        except OSError:
            return manifest.verify(artifact)  # says what is missing and how to rebuild it
        state = [str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino, artifact.sha256]
        record = self.folder / "verified" / hashlib.sha256(json.dumps(state).encode()).hexdigest()[:40]
        if record.is_file():
            return path
        checked = manifest.verify(artifact)
        with contextlib.suppress(OSError):  # an unwritable cache costs the hash next time, nothing more
            record.parent.mkdir(parents=True, exist_ok=True)
            record.touch()
        return checked

    def load_or_build(self, key: CacheKey, build: Callable[[], object],
                      export: Callable[[object], bytes | memoryview],
                      load: Callable[[memoryview], object]) -> tuple[object, str]:
        """(the compiled object, how it came): "cache hit" (loaded from the entry), or "compiled" (built now
        and stored). `build()` compiles, `export(compiled)` gives the bytes to keep, `load(payload)` imports
        them. Problems with the folder itself (read-only, full) are warned about and the build is used."""
        found = self._load(key, load)
        if found is not None:
            return found, "cache hit"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with self._locked(key):
                found = self._load(key, load)  # another process may have written it while we waited
                if found is not None:
                    return found, "cache hit"
                compiled = build()
                self._write(key, export(compiled))
        except OSError as error:
            log.warning("compiled-model cache %s not usable (%s); compiling without it", self.folder, error)
            return build(), "compiled (cache not writable)"
        self.prune(keep=self.path(key))
        return compiled, "compiled"

    def _load(self, key: CacheKey, load: Callable[[memoryview], object]) -> object | None:
        path = self.path(key)
        try:
            payload = self._payload(path, key)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            return self._discard(path, str(error))
        try:
            compiled = load(payload)
        except Exception as error:  # the runtime's own refusal of a damaged or foreign blob
            return self._discard(path, f"the runtime could not load it ({error})")
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used: pruned last
        return compiled

    @staticmethod
    def _payload(path: Path, key: CacheKey) -> memoryview:
        """The entry's payload, memory-mapped (pages are read as the runtime touches them), after checking
        its header against `key` (ValueError says what is wrong)."""
        with open(path, "rb") as file:
            if file.read(len(MAGIC)) != MAGIC:
                raise ValueError("not a deghost cache entry")
            line = file.readline(1 << 16)
            try:
                header = json.loads(line)
            except ValueError as error:
                raise ValueError(f"unreadable header ({error})") from error
            if header.get("key") != asdict(key):
                raise ValueError(f"made for another key ({header.get('key')})")
            start, size = len(MAGIC) + len(line), os.fstat(file.fileno()).st_size
            if size - start != header.get("size"):
                raise ValueError(f"{size - start} bytes of payload, the header says {header.get('size')} "
                                 "(a torn write)")
            # copy-on-write: writable as OpenVINO tensors must be, yet read from the file page by page; the map
            # stays valid after the file is closed, replaced or removed
            mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_COPY)
        return memoryview(mapped)[start:]

    def _discard(self, path: Path, why: str) -> None:
        log.warning("compiled-model cache entry %s ignored: %s; compiling the stage again", path, why)
        with contextlib.suppress(OSError):
            path.unlink()
        return None

    def _write(self, key: CacheKey, payload: bytes | memoryview) -> None:
        path = self.path(key)
        temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        header = json.dumps({"key": asdict(key), "size": len(payload)}, sort_keys=True).encode()
        try:
            # No fsync: a process or machine that dies leaves at worst a short entry, which its size check
            # refuses; waiting for the disk would only slow the first run.
            with open(temp, "wb") as file:
                file.write(MAGIC + header + b"\n")
                file.write(payload)
            os.replace(temp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()

    @contextlib.contextmanager
    def _locked(self, key: CacheKey) -> Iterator[None]:
        """One compiler per entry across processes and threads (flock on a per-entry lock file)."""
        if fcntl is None:
            yield
            return
        with open(self.folder / f".{key.name}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def entries(self) -> list[Path]:
        return sorted(self.folder.glob(f"*{SUFFIX}")) if self.folder.is_dir() else []

    def prune(self, keep: Path | None = None) -> list[Path]:
        """Remove least recently used entries until the folder holds at most `max_bytes` (never `keep`), and
        temporary files of writers that died; returns the entries removed."""
        now, removed = time.time(), []
        for temp in self.folder.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                if now - temp.stat().st_mtime > STALE_TEMP_S:
                    temp.unlink()
        sized = []
        for entry in self.entries():
            with contextlib.suppress(OSError):
                stat = entry.stat()
                sized.append((stat.st_mtime, stat.st_size, entry))
        total = sum(size for _, size, _ in sized)
        for _, size, entry in sorted(sized):
            if total <= self.max_bytes:
                break
            if entry == keep:
                continue
            with contextlib.suppress(OSError):
                entry.unlink()
                total -= size
                removed.append(entry)
        if removed:
            log.info("compiled-model cache %s: removed %d least recently used entr%s to stay under %.1f GB",
                     self.folder, len(removed), "y" if len(removed) == 1 else "ies", self.max_bytes / 2**30)
        return removed
