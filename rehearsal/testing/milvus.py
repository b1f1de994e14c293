"""A throwaway Milvus server for tests, benchmarks and trying the Milvus vector index.

It is ``milvus-lite`` (a pure-Python Milvus, from the ``milvus`` extra) run as a gRPC server on 127.0.0.1
at a free port, so the library reaches it through ``pymilvus.MilvusClient(uri=...)`` exactly as it would
reach a Milvus cluster. It runs as whoever calls it (root included) and keeps its data in a folder of
the caller's choosing (a fresh temporary one by default, removed on ``stop``).

    with start_milvus() as server:            # or: python -m rehearsal.testing.milvus
        url = server.url                      # milvus://127.0.0.1:PORT
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

__all__ = ["MilvusServer", "MilvusStartError", "start_milvus"]

_START_TRIES = 3  # a port found free can be taken before the server binds it: try another
_LOG_TAIL = 2000  # characters of the server's log quoted when it fails to start


class MilvusStartError(RuntimeError):
    """The server could not be started; the message says why (with the end of its log)."""


@dataclass
class MilvusServer:
    """A running milvus-lite server; ``stop`` ends it (and removes its folder if this module made it)."""

    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    log_path: Path
    _owned_dir: Path | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """The location to give ``vectors=`` (``milvus://127.0.0.1:PORT``)."""
        return f"milvus://127.0.0.1:{self.port}"

    @property
    def uri(self) -> str:
        """The address pymilvus takes."""
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._owned_dir is not None:
            shutil.rmtree(self._owned_dir, ignore_errors=True)
            self._owned_dir = None

    def __enter__(self) -> MilvusServer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _log_tail(path: Path) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return text[-_LOG_TAIL:].strip() or "(empty log)"


def _answers(uri: str) -> bool:
    """Whether the server answers a real request (a listening socket alone may not serve yet)."""
    from pymilvus import MilvusClient

    try:
        client = MilvusClient(uri=uri, timeout=2)
        try:
            client.list_collections()
        finally:
            client.close()
    except Exception:
        return False
    return True


def _start_once(data_dir: Path, log_path: Path, timeout: float) -> MilvusServer:
    port = _free_port()
    command = [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(data_dir)]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = MilvusServer(process, port, data_dir, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise MilvusStartError(
                f"milvus-lite exited with status {process.returncode} before serving on port {port}:\n"
                f"{_log_tail(log_path)}"
            )
        if _answers(server.uri):
            return server
        time.sleep(0.2)
    server.stop()
    raise MilvusStartError(
        f"milvus-lite did not answer on 127.0.0.1:{port} within {timeout:.0f} s:\n{_log_tail(log_path)}"
    )


def start_milvus(data_dir: Path | None = None, *, timeout: float = 60.0) -> MilvusServer:
    """Start milvus-lite on 127.0.0.1 at a free port and wait until it answers; MilvusStartError if not.

    ``data_dir`` keeps the server's data (reuse it to restart a server over the same collections); without
    it a temporary folder is made and removed on ``stop``. The server is stopped at interpreter exit too.
    """
    if importlib.util.find_spec("milvus_lite") is None or importlib.util.find_spec("pymilvus") is None:
        raise MilvusStartError(
            "milvus-lite or pymilvus is not installed: pip install -e '.[milvus]' (the dev extra includes it)"
        )
    owned = None
    try:
        if data_dir is None:
            owned = Path(tempfile.mkdtemp(prefix="rehearsal-milvus-"))
            data_dir = owned / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MilvusStartError(
            f"cannot make the Milvus data folder {data_dir}: {exc.strerror or exc}"
        ) from exc
    log_path = data_dir.parent / f"{data_dir.name}.milvus.log"
    failure: MilvusStartError | None = None
    for _ in range(_START_TRIES):
        try:
            server = _start_once(data_dir, log_path, timeout)
        except MilvusStartError as exc:
            failure = exc
            if "address already in use" not in str(exc).lower():
                break
            continue
        server._owned_dir = owned
        atexit.register(server.stop)
        return server
    if owned is not None:
        shutil.rmtree(owned, ignore_errors=True)
    assert failure is not None
    raise failure


def main() -> None:
    """``python -m rehearsal.testing.milvus [DATA_DIR]``: run a server until interrupted."""
    data_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    with start_milvus(data_dir) as server:
        print(f"milvus-lite serving at {server.url} (data in {server.data_dir}); Ctrl-C stops it", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.process.wait()


if __name__ == "__main__":
    main()
