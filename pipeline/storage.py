"""Objects under a root URI (local folder, ``s3://``, ``gs://``) through fsspec.

* ``Storage(root).put(key, data)`` is atomic per object: a local write goes to a temp file in the
  same folder and is ``os.replace``-d into place (readers never see half a file); an object store
  PUT is atomic already.
* Keys are relative, ``/``-separated and cannot leave the root: ``check_key`` refuses ``..``,
  absolute paths, backslashes, URL schemes, NUL and control characters, empty segments and glob
  characters (fsspec expands those in some calls). ``safe_key(*parts)`` joins parts and checks.
* Sources named in manifests are read through ``read_source`` with a scheme allow-list, so a
  manifest row cannot make a worker fetch ``http://169.254.169.254/...`` or ``memory://``.
* ``local_copy(fs, path)`` is the one way to hand a library that wants a file path (PyAV) an object:
  the path itself when local, else a temp copy removed afterwards.

Failures are ``StorageError``; those that are the machine's or the store's and not the object's
(``machine_fault``: no space left, a quota, a read-only or refused output, credentials refused) are
``MachineError``, so a batch job stops instead of recording them as bad photos (an unreachable store
too, once the client's own retries are spent). Reading a *source*
is judged more narrowly: a source that is missing or refused for itself (a local file without read
permission, S3's 403 AccessDenied, which is also what a missing key looks like without ListBucket)
is that photo's failure; only credentials refused for the whole store are the machine's.

S3 endpoints (MinIO, tests): ``storage_options={"endpoint_url": ...}`` or the environment
variable ``STYLIZE_S3_ENDPOINT`` (then ``AWS_ENDPOINT_URL``). Credentials come from the usual
AWS variables / profiles; nothing here reads them.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from typing import Any

import fsspec
from fsspec.core import split_protocol

from pipeline.errors import MachineError, StorageError

# "" is a plain local path. http(s), ftp, memory, data... must be allowed explicitly.
ALLOWED_SCHEMES: frozenset[str] = frozenset({"file", "s3", "gs", "gcs", ""})
_TMP_MARK = ".tmp-stylize-"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# what fsspec or Windows would read as a protocol / drive; "10:30.jpg" stays a fine key
_SCHEME_LIKE = re.compile(r"^([A-Za-z]:|data:)", re.IGNORECASE)
_GLOB = set("*?[]")
# the only way to read the umask is to set it; done once at import, before any threads write
_UMASK = os.umask(0o022)
os.umask(_UMASK)
MAX_KEY_BYTES = 1024  # S3's limit
MAX_SEGMENT_BYTES = 255  # most local filesystems' limit

# a full disk, a quota, a read-only or refused output: the machine's fault, whatever was being written
_MACHINE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})
# the store refusing who we are (not what we asked for): botocore's and google-auth's credential errors by
# name (neither is a dependency), and the S3 error codes that s3fs turns into a PermissionError
_CREDENTIAL_ERRORS = frozenset(
    {
        "NoCredentialsError",
        "PartialCredentialsError",
        "CredentialRetrievalError",
        "NoAuthTokenError",
        "TokenRetrievalError",
        "UnauthorizedSSOTokenError",
        "DefaultCredentialsError",
        "RefreshError",
    }
)
# the store not reachable at all once the client's own retries are spent (botocore's, by name); a read that
# times out half-way is not here: it is transient, and the shard is tried again
_UNREACHABLE = frozenset({"EndpointConnectionError", "ConnectTimeoutError", "ProxyConnectionError"})
_TRANSIENT = frozenset({"ReadTimeoutError", "ConnectionClosedError", "IncompleteReadError"})  # botocore's
_REFUSED_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "AccountProblem",
        "AllAccessDisabled",
    }
)


def schemes_of(uri: str) -> list[str]:
    """The protocols fsspec would use for ``uri``, as fsspec itself splits them ("" = local path).

    Chained URLs (``simplecache::s3://b/k``) give one scheme per link.
    """
    links = str(uri).split("::")
    out = []
    for i, link in enumerate(links):
        protocol, _ = split_protocol(link)
        if protocol is None and i < len(links) - 1:
            protocol = link  # "simplecache::..." names the layer alone
        out.append((protocol or "").lower())
    return out


def check_scheme(uri: str, allowed_schemes: Iterable[str] = ALLOWED_SCHEMES) -> None:
    """Raise ``StorageError`` unless every scheme of ``uri`` is allowed."""
    allowed = {s.lower() for s in allowed_schemes}
    for scheme in schemes_of(uri):
        if scheme not in allowed:
            shown = ", ".join(sorted(s or '"" (local path)' for s in allowed))
            raise StorageError(f"scheme {scheme or 'local'!r} of {uri!r} is not allowed (allowed: {shown})")


def key_problem(key: object) -> str | None:
    """Why ``key`` is not a safe relative object key, or None when it is."""
    if not isinstance(key, str):
        return f"key must be a string, got {type(key).__name__}"
    if not key:
        return "empty key"
    if "\x00" in key:
        return "NUL byte in key"
    if _CONTROL.search(key):
        return "control character in key"
    if "\\" in key:
        return "backslash in key"
    if "://" in key or "::" in key or _SCHEME_LIKE.match(key):
        return "URL scheme or drive letter in key"
    if key.startswith("/"):
        return "absolute path"
    if _GLOB & set(key):
        return "glob character (*?[]) in key"
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        return f"key longer than {MAX_KEY_BYTES} bytes"
    for seg in key.split("/"):
        if seg in ("", ".", ".."):
            return f"segment {seg!r} in key" if seg else "empty segment (//) or trailing slash"
        if len(seg.encode("utf-8", "surrogatepass")) > MAX_SEGMENT_BYTES:
            return f"segment longer than {MAX_SEGMENT_BYTES} bytes"
    return None


def check_key(key: str) -> str:
    """Return ``key`` if safe, else raise ``StorageError`` naming the problem."""
    problem = key_problem(key)
    if problem:
        raise StorageError(f"unsafe key {key!r}: {problem}")
    return key


def safe_key(*parts: str) -> str:
    """Join key parts with ``/``; every part may itself hold ``/`` but nothing that escapes.

    ``safe_key("run-1", "images", "2020/a.jpg")`` -> ``"run-1/images/2020/a.jpg"``;
    ``safe_key("out", "../x")`` raises ``StorageError``.
    """
    if not parts:
        raise StorageError("safe_key needs at least one part")
    for part in parts:
        problem = key_problem(part)
        if problem:
            raise StorageError(f"unsafe key part {part!r}: {problem}")
    return check_key("/".join(parts))


def s3_options(storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """``storage_options`` plus the endpoint from the environment when none is given."""
    opts = dict(storage_options or {})
    has_endpoint = "endpoint_url" in opts or "endpoint_url" in (opts.get("client_kwargs") or {})
    endpoint = os.environ.get("STYLIZE_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint and not has_endpoint:
        opts["endpoint_url"] = endpoint
    return opts


def open_fs(uri: str, storage_options: dict[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """``(filesystem, path)`` for ``uri``; S3 gets ``s3_options``. Raises ``StorageError``."""
    schemes = schemes_of(uri)
    opts = s3_options(storage_options) if schemes[-1] in ("s3", "s3a") else dict(storage_options or {})
    try:
        return fsspec.core.url_to_fs(uri, **opts)
    except (ImportError, ValueError) as exc:
        raise StorageError(f"cannot open {uri!r}: {exc}") from None


def read_source(
    uri: str,
    allowed_schemes: Iterable[str] = ALLOWED_SCHEMES,
    storage_options: dict[str, Any] | None = None,
) -> bytes:
    """Bytes of a source object named by a manifest; the scheme must be allowed."""
    check_scheme(uri, allowed_schemes)
    fs, path = open_fs(uri, storage_options)
    try:
        return fs.cat_file(path)
    except FileNotFoundError:
        raise StorageError(f"not found: {uri}") from None
    except IsADirectoryError:
        raise StorageError(f"is a directory: {uri}") from None
    except Exception as exc:  # noqa: BLE001 - sorted by _failure
        raise _failure(f"cannot read {uri}", exc, source=True) from None


def credentials_refused(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) says the store refused our credentials."""
    for e in (exc, exc.__cause__, exc.__context__):
        if e is None:
            continue
        if type(e).__name__ in _CREDENTIAL_ERRORS:
            return True
        response = getattr(e, "response", None)
        code = (response.get("Error") or {}).get("Code") if isinstance(response, dict) else None
        if code in _REFUSED_CODES:
            return True
    return False


def machine_fault(exc: BaseException, *, source: bool = False) -> bool:
    """Whether ``exc`` from the store is the machine's or the store's fault rather than the object's. Under an
    output every refusal is (``PermissionError`` is how s3fs reports a 403); reading a ``source`` only
    credentials refused for the whole store, or a store that cannot be reached, are (see the module's notes)."""
    if credentials_refused(exc) or type(exc).__name__ in _UNREACHABLE or isinstance(exc, ConnectionRefusedError):
        return True
    if source or not isinstance(exc, OSError):
        return False
    return isinstance(exc, PermissionError) or exc.errno in _MACHINE_ERRNOS


def _failure(what: str, exc: Exception, *, source: bool = False) -> Exception:
    """The error to raise for ``exc`` met while doing ``what``: ``MachineError`` for the machine's faults,
    ``StorageError`` for other store errors, ``exc`` itself for anything else (a bug keeps its traceback)."""
    if machine_fault(exc, source=source):
        return MachineError(f"{what}: {type(exc).__name__}: {exc}")
    if isinstance(exc, (OSError, ValueError)) or type(exc).__name__ in _TRANSIENT:
        return StorageError(f"{what}: {type(exc).__name__}: {exc}")
    return exc


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


@contextlib.contextmanager
def local_copy(fs: fsspec.AbstractFileSystem, path: str, default_suffix: str = "") -> Iterator[str]:
    """``path`` on ``fs`` as a local file path for libraries that want one (PyAV seeks): the path itself when
    ``fs`` is local, else a temp copy (same suffix) removed on exit. A missing object raises FileNotFoundError
    before anything is yielded."""
    if is_local(fs):
        yield path
        return
    fd, tmp = tempfile.mkstemp(suffix=os.path.splitext(path)[1] or default_suffix, prefix="stylize-")
    os.close(fd)
    try:
        fs.get_file(path, tmp)
        yield tmp
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


class Storage:
    """Objects under ``root_uri``; keys are relative and checked by ``check_key``."""

    def __init__(self, root_uri: str, storage_options: dict[str, Any] | None = None):
        if not root_uri:
            raise StorageError("empty storage root")
        self.root_uri = root_uri.rstrip("/") or "/"
        self.fs, root = open_fs(self.root_uri, storage_options)
        self.root = root.rstrip("/")
        self.local = is_local(self.fs)

    def __repr__(self) -> str:
        return f"Storage({self.root_uri!r})"

    def _path(self, key: str) -> str:
        return f"{self.root}/{check_key(key)}"  # root "" is the filesystem root "/"

    def uri(self, key: str) -> str:
        """Full URI (or local path) of ``key``, in the form the root was given."""
        return f"{self.root_uri.rstrip('/')}/{check_key(key)}"

    def put(self, key: str, data: bytes) -> str:
        """Write ``data`` at ``key`` atomically; returns ``uri(key)``."""
        return self._put(key, data, None)

    def create(self, key: str, data: bytes) -> bool:
        """Write ``data`` at ``key`` only if no object is there: True if written, False if one was.

        Exclusive only on a local filesystem (the complete file is hard-linked into place, which fails
        if the name exists); object stores have no portable conditional write, so there this is
        check-then-put and the caller must verify (``pipeline.lease`` reads back its token)."""
        path = self._path(key)
        try:
            if not self.local:
                if self.fs.isfile(path):
                    return False
                self.fs.pipe_file(path, data)
                return True
            folder, name = os.path.split(path)
            os.makedirs(folder, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name[:100]}{_TMP_MARK}")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.chmod(tmp, 0o666 & ~_UMASK)
                os.link(tmp, path)  # atomic and exclusive: readers never see a partial object
            except FileExistsError:
                return False
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        except OSError as exc:
            raise StorageError(f"cannot write {self.uri(key)}: {type(exc).__name__}: {exc}") from None
        return True

    def put_file(self, key: str, local_path: str) -> str:
        """Copy the local file ``local_path`` to ``key`` (streamed, atomic where local); returns ``uri(key)``.
        For outputs too large to hold in memory, such as videos."""
        return self._put(key, None, local_path)

    def _put(self, key: str, data: bytes | None, local_path: str | None) -> str:
        path = self._path(key)
        try:
            if self.local:
                _atomic_local_write(path, data, local_path)
            elif local_path is not None:
                self.fs.put_file(local_path, path)
            else:
                self.fs.pipe_file(path, data)
        except Exception as exc:  # noqa: BLE001 - sorted by _failure
            raise _failure(f"cannot write {self.uri(key)}", exc) from None
        return self.uri(key)

    def get_file(self, key: str, local_path: str) -> None:
        """Copy ``key`` to the local file ``local_path`` (streamed)."""
        try:
            self.fs.get_file(self._path(key), local_path)
        except FileNotFoundError:
            raise StorageError(f"not found: {self.uri(key)}") from None
        except Exception as exc:  # noqa: BLE001 - sorted by _failure
            raise _failure(f"cannot read {self.uri(key)}", exc) from None

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return self.fs.cat_file(path)
        except FileNotFoundError:
            raise StorageError(f"not found: {self.uri(key)}") from None
        except Exception as exc:  # noqa: BLE001 - sorted by _failure
            raise _failure(f"cannot read {self.uri(key)}", exc) from None

    def open(self, key: str) -> Any:
        """``key`` as a binary file object for range reads (a Parquet footer without the rows)."""
        try:
            return self.fs.open(self._path(key), "rb")
        except FileNotFoundError:
            raise StorageError(f"not found: {self.uri(key)}") from None
        except Exception as exc:  # noqa: BLE001 - sorted by _failure
            raise _failure(f"cannot read {self.uri(key)}", exc) from None

    def read_if_exists(self, key: str) -> bytes | None:
        """``get`` in one storage call, None where there is no object."""
        path = self._path(key)
        try:
            return self.fs.cat_file(path)
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001 - sorted by _failure
            raise _failure(f"cannot read {self.uri(key)}", exc) from None

    def remove_partial(self, key: str) -> None:
        """Remove what an interrupted ``put`` of ``key`` left behind (local temp files; object stores leave none)."""
        if not self.local:
            return
        folder, name = os.path.split(self._path(key))
        for leftover in glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(name[:100])}{_TMP_MARK}*")):
            with contextlib.suppress(OSError):
                os.unlink(leftover)

    def prune(self, prefix: str) -> None:
        """Remove the local folder ``prefix`` if it is empty (object stores have no folders to leave)."""
        if self.local:
            with contextlib.suppress(OSError):
                os.rmdir(self._path(prefix))

    def exists(self, key: str) -> bool:
        path = self._path(key)
        try:
            return bool(self.fs.isfile(path))
        except Exception as exc:  # noqa: BLE001 - sorted by _failure
            raise _failure(f"cannot check {self.uri(key)}", exc) from None

    def delete(self, key: str) -> None:
        """Remove one object; a missing one is not an error (deletes are retried)."""
        path = self._path(key)
        try:
            self.fs.rm_file(path)
        except FileNotFoundError:
            pass
        except Exception as exc:  # noqa: BLE001 - sorted by _failure
            raise _failure(f"cannot delete {self.uri(key)}", exc) from None

    def list(self, prefix: str = "") -> list[str]:
        """Sorted keys under the root that start with ``prefix`` (a string prefix, not only a folder)."""
        if prefix and (prefix.startswith("/") or ".." in prefix.split("/") or "\\" in prefix or "://" in prefix):
            raise StorageError(f"unsafe list prefix {prefix!r}")
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = f"{self.root}/{folder}".rstrip("/")
        try:
            self.fs.invalidate_cache(base)  # s3fs caches listings; a fresh put must show up
            found = self.fs.find(base)
        except FileNotFoundError:
            return []
        except Exception as exc:  # noqa: BLE001 - sorted by _failure
            raise _failure(f"cannot list {self.root_uri}/{folder}", exc) from None
        root = self.root + "/"
        keys = []
        for path in found:
            if not path.startswith(root):
                continue
            key = path[len(root) :]
            if key.startswith(prefix) and _TMP_MARK not in key.rsplit("/", 1)[-1]:
                keys.append(key)
        return sorted(keys)


def _atomic_local_write(path: str, data: bytes | None, source: str | None = None) -> None:
    """``data`` (or the file at ``source``, copied) written to a temp file beside ``path``, then renamed."""
    folder, name = os.path.split(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name[:100]}{_TMP_MARK}")
    try:
        with os.fdopen(fd, "wb") as f:
            if source is not None:
                with open(source, "rb") as src:
                    shutil.copyfileobj(src, f, 1 << 20)
            else:
                f.write(data)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; the object should look like any written file
        # no fsync: this guards readers against partial files, not the machine against power loss
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
