"""Where backend='auto' keeps its decisions on CUDA: in memory, and in one JSON file per GPU and versions.

The file is `<dir>/autotune-<gpu>-sm<major><minor>-<digest>.json`, where <dir> is FASTRNN_CACHE_DIR,
else $XDG_CACHE_HOME/fastrnn, else ~/.cache/fastrnn (read when a device's cache is first asked
for), and <digest> hashes the identity the decisions hold for: GPU name, compute capability, and
the torch, cuDNN, triton and fastrnn versions. Its content:
    {"format": 1, "identity": {...}, "decisions": {signature key: {"choice": "triton:split",
     "times_ms": {candidate: ms}, "excluded": {candidate: reason}}}}

A write holds an exclusive lock on `<file>.lock` (fcntl, where the platform has it), reads what is
on disk, adds this process's decisions, writes a temporary file in the same directory and moves
it over the old one with os.replace: a reader always sees a whole file, and processes that tune
at once (DDP ranks) lose none of each other's decisions. A file that is not JSON of this format,
or holds another identity's decisions, is ignored with one warning and replaced at the next write.
"""
import contextlib
import hashlib
import json
import os
import re
import tempfile
import warnings

import torch

FORMAT = 1
CACHE_ENV = "FASTRNN_CACHE_DIR"

_CACHES = {}      # file path -> DecisionCache
_BY_DEVICE = {}   # CUDA device index -> the DecisionCache its last decision used
_IDENTITIES = {}  # CUDA device index -> identity


class CacheWarning(UserWarning):
    """The decision cache file could not be read or written; auto goes on without it."""


def cache_dir():
    """FASTRNN_CACHE_DIR, else $XDG_CACHE_HOME/fastrnn, else ~/.cache/fastrnn."""
    explicit = os.environ.get(CACHE_ENV, "").strip()
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fastrnn")


def _index(device):
    """The index of CUDA `device` (the current device's when it names none)."""
    device = torch.device(device)
    if device.index is not None:
        return device.index
    return torch.cuda.current_device() if device.type == "cuda" else 0


def identity(device):
    """What a decision on CUDA `device` holds for: GPU name, compute capability, versions."""
    index = _index(device)
    if index not in _IDENTITIES:
        import triton

        from . import __version__
        major, minor = torch.cuda.get_device_capability(index)
        _IDENTITIES[index] = {"gpu": torch.cuda.get_device_name(index), "capability": f"{major}.{minor}",
                              "torch": torch.__version__, "cudnn": torch.backends.cudnn.version(),
                              "triton": triton.__version__, "fastrnn": __version__}
    return _IDENTITIES[index]


def path_for(directory, ident):
    """The file of `ident`'s decisions in `directory`."""
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", str(ident.get("gpu", "gpu"))).strip("-").lower() or "gpu"
    sm = str(ident.get("capability", "")).replace(".", "")
    return os.path.join(directory, f"autotune-{gpu}-sm{sm}-{digest}.json")


def for_device(device):
    """The DecisionCache of CUDA `device` in the current cache directory. Asked at every call of
    auto: the file's name (a hash of the identity) is worked out only when the directory or the
    identity changed since the device's last call."""
    index, ident, directory = _index(device), identity(device), cache_dir()
    cache = _BY_DEVICE.get(index)
    if cache is None or cache.directory != directory or cache.identity != ident:
        cache = _BY_DEVICE[index] = open_cache(path_for(directory, ident), ident)
        cache.directory = directory
    return cache


def open_cache(path, ident):
    """The one DecisionCache of this process for the file at `path`, holding `ident`'s decisions."""
    cache = _CACHES.get(path)
    if cache is None or cache.identity != ident:
        cache = _CACHES[path] = DecisionCache(path, ident)
    return cache


def remembered(key, device=None):
    """The choice label this process holds in memory for `key` (on `device`, else on any CUDA device
    decided on so far), or None. Reads no file: what torch.compile's tracing may ask."""
    if device is None:
        caches = list(_BY_DEVICE.values())
    else:
        index = _index(device)
        caches = [_BY_DEVICE[index]] if index in _BY_DEVICE else []
    for cache in caches:
        record = cache.memory.get(key) if cache.memory is not None else None
        if record is not None:
            return record["choice"]
    return None


class DecisionCache:
    """The decisions of one identity: `get(key)` (loads the file on first use) and `put(key, record,
    persist=True)` (memory, then the file, merged under the lock)."""

    def __init__(self, path, ident):
        self.path, self.identity = path, dict(ident)
        self.directory = os.path.dirname(path)
        self.memory = None  # key -> record, once loaded
        self.volatile = set()  # keys whose records stay in this process (put with persist=False)
        self._warned = set()

    def get(self, key):
        if self.memory is None:
            self.memory = self._read()
        return self.memory.get(key)

    def put(self, key, record, persist=True):
        """Keep `record` for `key`; unless `persist` is False (a decision resting on a passing
        failure), also in the file, with every other persistent decision of this process."""
        self.get(key)
        self.memory[key] = record
        if not persist:
            self.volatile.add(key)
            return
        self.volatile.discard(key)
        try:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            with _locked(self.path + ".lock"):
                merged = {**self._read(), **{k: v for k, v in self.memory.items() if k not in self.volatile}}
                self.memory.update(merged)  # and learn what other processes decided meanwhile
                _write_atomic(self.path, {"format": FORMAT, "identity": self.identity, "decisions": merged})
        except OSError as exc:
            self._warn("write", f"fastrnn: cannot write auto's decision cache {self.path} ({exc}); "
                                "decisions stay in this process's memory")

    def _read(self):
        """The decisions on disk, or {} (with one warning) when the file is not ours to read."""
        try:
            with open(self.path) as f:
                data = json.load(f)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            return self._ignore(f"it cannot be read ({type(exc).__name__}: {exc})")
        except ValueError as exc:  # not JSON (or not UTF-8)
            return self._ignore(f"it cannot be read as JSON ({type(exc).__name__}: {exc})")
        problem = _problem(data, self.identity)
        return self._ignore(problem) if problem else dict(data["decisions"])

    def _ignore(self, why):
        self._warn("read", f"fastrnn: ignoring auto's decision cache {self.path}: {why}; it will be rebuilt")
        return {}

    def _warn(self, kind, message):
        if kind not in self._warned:
            self._warned.add(kind)
            warnings.warn(message, CacheWarning, stacklevel=4)


def _problem(data, ident):
    """Why `data` (a parsed file) is not a decision file of `ident`, or ''."""
    from .autotune import Choice
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return f"not a format-{FORMAT} fastrnn decision file"
    if data.get("identity") != ident:
        return f"its decisions hold for {data.get('identity')!r}, not for {ident!r}"
    decisions = data.get("decisions")
    if not isinstance(decisions, dict):
        return "it has no decisions table"
    for key, record in decisions.items():
        try:
            Choice.parse(record["choice"])
        except (TypeError, KeyError, ValueError):
            return f"its entry {key!r} is not a decision: {record!r}"
    return ""


@contextlib.contextmanager
def _locked(path):
    """An exclusive lock on the file at `path` (created if missing) for the block; none without fcntl."""
    try:
        import fcntl
    except ImportError:  # not POSIX: writes stay atomic, concurrent writers may drop an entry
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _umask():
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def _write_atomic(path, data):
    """Write `data` as JSON to a temporary file beside `path`, then move it over `path`."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".autotune-", suffix=".tmp")
    try:
        # mkstemp makes the file 0600: give it the mode open() would, so that other users (or
        # ranks run as another user) sharing the cache directory can read and update it
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
