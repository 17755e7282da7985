"""Ray Serve's 1.x Python API, against a Ferroserve server: ``from ferroserve import serve``.

    client = serve.start()                       # a server owned by this script
    client.create_backend("hello", hello)        # a function or class, by reference or value
    client.create_endpoint("hello", backend="hello", route="/hello")
    handle = client.get_handle("hello")
    print(ferroserve.get(handle.remote("world")))

Everything goes through the server's control API (see docs/operations.md) with the standard
library's HTTP client: nothing to install but the ``ferroserve`` command.
"""

import atexit
import base64
import concurrent.futures
import inspect
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

__all__ = [
    "Client",
    "ClientHandle",
    "ObjectRef",
    "RayServeException",
    "connect",
    "get",
    "start",
    "wait",
]

DEFAULT_ADDRESS = "http://127.0.0.1:8265"


class RayServeException(Exception):
    """An error from the server or from a backend, raised in the caller: ``status`` is the
    HTTP status it would have had; ``traceback`` where a Python backend raised it (printed
    with the error, not part of its message)."""

    def __init__(self, message, status=None, traceback=None):
        super().__init__(message)
        self.status = status
        self.traceback = traceback
        if traceback and hasattr(self, "add_note"):
            # Shown when Python prints the error; not part of str(error), which a backend
            # might put in an HTTP answer.
            self.add_note(f"The backend's traceback:\n{traceback.rstrip()}")


ServeException = RayServeException


class GetTimeoutError(TimeoutError):
    """``get`` waited longer than its ``timeout``."""


# --- the server ----------------------------------------------------------------------------


def _binary():
    import sysconfig

    # `pip install .` puts the command beside this interpreter's scripts, on PATH or not.
    beside = [os.path.join(sysconfig.get_path("scripts"), "ferroserve"), os.path.join(os.path.dirname(sys.executable), "ferroserve")]
    found = os.environ.get("FERROSERVE_BIN") or shutil.which("ferroserve")
    found = found or next((p for p in beside if os.access(p, os.X_OK)), None)
    if not found:
        raise RayServeException(
            "cannot find the `ferroserve` command: pip install . from a Ferroserve checkout "
            "(or cargo install --path .), or set FERROSERVE_BIN to its path"
        )
    return found


def _http_section(http_options):
    """The app file's `http` section for ``serve.start``'s ``http_options``."""
    from ._middlewares import middleware_options

    http = {}
    for key, value in (http_options or {}).items():
        if key == "middlewares":
            http["middlewares"] = [middleware_options(m) for m in value]
        elif key in ("host", "port"):
            http[key] = value
        elif key == "location":
            if value not in (None, "HeadOnly", "EveryNode"):
                raise ValueError(f"http_options.location: `{value}` is not supported")
        else:
            raise ValueError(f"http_options: unknown key `{key}` (host, port, middlewares)")
    return http


def start(detached=False, http_options=None, *, control_port=None, state_dir=None, timeout=120):
    """Starts a ``ferroserve start`` process and returns a client to it. Unless
    ``detached``, the server is stopped when this script exits. ``http_options``: ``host``,
    ``port`` (8000; 0 picks a free one) and ``middlewares`` (Starlette's CORS, GZip,
    TrustedHost and HTTPSRedirect). The control API takes a free port, or 8265 when
    detached (so that ``serve.connect()`` finds it later). The server's and the workers'
    output goes to ``client.log``."""
    http = {"host": "127.0.0.1", "port": 8000}
    http.update(_http_section(http_options))
    if control_port is None:
        control_port = 8265 if detached else 0
    workdir = tempfile.mkdtemp(prefix="ferroserve-")
    app = os.path.join(workdir, "app.json")
    with open(app, "w") as f:
        json.dump({"http": http}, f)
    log = os.path.join(workdir, "server.log")
    args = [_binary(), "start", app, "--control-port", str(control_port)]
    if state_dir is not None:
        args += ["--state-dir", os.fspath(state_dir)]
    env = dict(os.environ)
    # Workers run in this interpreter, so what this script can import, they can.
    env.setdefault("FERROSERVE_PYTHON", sys.executable)
    with open(log, "wb") as out:
        # A file, not a pipe: a detached server and its workers outlive this script.
        process = subprocess.Popen(
            args, stdout=out, stderr=out, stdin=subprocess.DEVNULL, env=env, start_new_session=detached
        )
    control = proxy = None
    deadline = time.monotonic() + timeout
    while proxy is None:
        with open(log, "rb") as f:
            for line in f.read().decode("utf-8", "replace").splitlines():
                if line.startswith("ferroserve control API on "):
                    control = line.split(" on ", 1)[1].strip()
                elif line.startswith("ferroserve listening on "):
                    proxy = line.split(" on ", 1)[1].strip()
        if proxy is not None:
            break
        code = process.poll()
        if code is not None or time.monotonic() > deadline:
            if code is None:
                process.kill()
                process.wait()
            with open(log, "rb") as f:
                tail = f.read().decode("utf-8", "replace")[-2000:]
            raise RayServeException(f"the server did not start (exit code {process.returncode}):\n{tail}")
        time.sleep(0.02)
    if control is None:
        process.kill()
        raise RayServeException(f"the server has no control API; see {log}")
    client = Client(control, http_address=proxy, process=process)
    client.log = log
    if not detached:
        atexit.register(client.shutdown)
    return client


def connect(address=None):
    """A client to a running server: ``address`` is its control API (default
    ``$FERROSERVE_ADDRESS``, else ``http://127.0.0.1:8265``)."""
    client = Client(address or os.environ.get("FERROSERVE_ADDRESS") or DEFAULT_ADDRESS)
    client._request("GET", "/api/status")
    return client


# --- the client ----------------------------------------------------------------------------


def _config_body(config):
    """Ray's backend config keys as the server's."""
    body = {}
    for key, value in (config or {}).items():
        if key == "batch_wait_timeout":  # Ray 1.x: seconds
            body["batch_wait_timeout_ms"] = int(round(float(value) * 1000))
        elif key == "max_concurrent_queries" or key == "max_queued_requests":
            body[key] = value
        else:
            body[key] = value
    return body


def _where(func_or_class):
    """(target, working_dir, pickled) of a function or class: by reference when its module
    can import it under its name, else by value (cloudpickle)."""
    module = inspect.getmodule(func_or_class)
    name = getattr(func_or_class, "__qualname__", None) or getattr(func_or_class, "__name__", "")
    importable = (
        module is not None
        and module.__name__ not in ("__main__", "__mp_main__")
        and name.isidentifier()  # not Outer.Inner, not <lambda>, not f.<locals>.g
        and getattr(module, name, None) is func_or_class
        and getattr(module, "__file__", None)
    )
    if importable:
        path = module.__file__
        root = os.path.dirname(os.path.abspath(path))
        depth = module.__name__.count(".")
        if os.path.basename(path).startswith("__init__."):
            depth += 1
        for _ in range(depth):
            root = os.path.dirname(root)
        return f"{module.__name__}:{name}", root, None
    try:
        import cloudpickle
    except ImportError:
        raise RayServeException(
            f"`{name}` is defined in a script or notebook, so it is sent by value, which needs "
            "cloudpickle: pip install cloudpickle (or move it into a module)"
        ) from None
    pickled = base64.b64encode(cloudpickle.dumps(func_or_class)).decode("ascii")
    short = getattr(func_or_class, "__name__", "")
    label = short if short.isidentifier() else "backend"
    # What the script imports from beside it, the workers find there too.
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    where = os.path.dirname(os.path.abspath(main)) if main else os.getcwd()
    return f"__main__:{label}", where, pickled


class Client:
    """Ray Serve 1.x's client, over the control API at ``address``."""

    def __init__(self, address, http_address=None, process=None):
        self.address = address.rstrip("/")
        self.http_address = http_address
        self._process = process
        self._executor = None
        self.log = None

    def __repr__(self):
        return f"Client({self.address!r})"

    def _request(self, method, path, body=None, timeout=600):
        with self._open(method, path, body, timeout) as response:
            return response.read()

    def _open(self, method, path, body=None, timeout=600):
        """The response to a request, to read; a refusal as ``RayServeException``."""
        data = None
        headers = {}
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        token = os.environ.get("FERROSERVE_CONTROL_TOKEN")
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(self.address + path, data=data, method=method, headers=headers)
        try:
            return urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as error:
            text = error.read().decode("utf-8", "replace")
            try:
                message = json.loads(text).get("error", text)
            except ValueError:
                message = text
            raise RayServeException(message, status=error.code) from None
        except (urllib.error.URLError, ConnectionError) as error:
            reason = getattr(error, "reason", error)
            raise ConnectionError(f"cannot reach the Ferroserve server at {self.address}: {reason}") from None

    def _json(self, method, path, body=None):
        return json.loads(self._request(method, path, body) or b"null")

    # backends

    def create_backend(self, backend_tag, func_or_class, *actor_init_args, config=None, env=None):
        """Starts a backend running ``func_or_class`` (a class gets ``actor_init_args``);
        returns once its replicas run. ``config`` takes the app file's keys."""
        target, working_dir, pickled = _where(func_or_class)
        python = {"target": target, "working_dir": working_dir}
        if pickled is not None:
            python["pickled"] = pickled
        if env:
            python["env"] = {str(k): str(v) for k, v in dict(env).items()}
        body = {"python": python}
        body.update(_config_body(config))
        if actor_init_args:
            body["init_args"] = list(actor_init_args)
        self._request("POST", f"/api/backends/{backend_tag}", body)

    def update_backend_config(self, backend_tag, config_options):
        """Changes some of a backend's config keys while it serves (scale, ``user_config``,
        limits in place; ``init_args`` or batching by a rolling update)."""
        listed = self._backend(backend_tag)
        listed.update(_config_body(config_options))
        listed.pop("name", None)
        self._request("PUT", f"/api/backends/{backend_tag}", listed)

    def get_backend_config(self, backend_tag):
        """A backend's config, as the app file's keys."""
        listed = self._backend(backend_tag)
        return {k: v for k, v in listed.items() if k not in ("name", "python", "builtin", "rust")}

    def _backend(self, backend_tag):
        for backend in self._json("GET", "/api/app").get("backends", []):
            if backend.get("name") == backend_tag:
                return backend
        raise RayServeException(f"backend `{backend_tag}` does not exist", status=404)

    def delete_backend(self, backend_tag):
        self._request("DELETE", f"/api/backends/{backend_tag}")

    def list_backends(self):
        """Each backend's config, by name."""
        return {
            b["name"]: {k: v for k, v in b.items() if k != "name"}
            for b in self._json("GET", "/api/app").get("backends", [])
        }

    # endpoints

    def create_endpoint(self, endpoint_name, *, backend=None, route=None, methods=("GET",)):
        """An endpoint sending all its traffic to ``backend``, served at ``route`` if given."""
        if backend is None:
            raise TypeError("create_endpoint needs backend=")
        body = {"backend": backend, "methods": [m.upper() for m in methods]}
        if route is not None:
            body["route"] = route
        self._request("POST", f"/api/endpoints/{endpoint_name}", body)

    def delete_endpoint(self, endpoint):
        self._request("DELETE", f"/api/endpoints/{endpoint}")

    def list_endpoints(self):
        """Each endpoint's route, methods, traffic and shadow, by name."""
        return self._json("GET", "/api/status").get("endpoints", {})

    def set_traffic(self, endpoint_name, traffic_policy_dictionary):
        self._request("PUT", f"/api/endpoints/{endpoint_name}/traffic", dict(traffic_policy_dictionary))

    def shadow_traffic(self, endpoint_name, backend_tag, proportion):
        body = {"backend": backend_tag, "proportion": float(proportion)}
        self._request("PUT", f"/api/endpoints/{endpoint_name}/shadow", body)

    # handles

    def get_handle(self, endpoint_name, missing_ok=False):
        """A handle to an endpoint: ``handle.remote(arg)`` goes through the same router as
        HTTP (traffic, replica choice, queue, batching)."""
        if not missing_ok and endpoint_name not in self.list_endpoints():
            raise RayServeException(f"endpoint `{endpoint_name}` does not exist", status=404)
        return ClientHandle(self, endpoint_name)

    def _pool(self):
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=64, thread_name_prefix="ferroserve-call")
            # Calls still queued at exit are dropped, not run (the pool's threads would
            # otherwise keep the script alive until every call answered).
            threading._register_atexit(self._executor.shutdown, wait=False, cancel_futures=True)
        return self._executor

    # the server

    def shutdown(self):
        """Stops the server (one this script started, or any it is connected to)."""
        try:
            self._request("POST", "/api/shutdown", timeout=5)
        except (ConnectionError, RayServeException):
            pass
        if self._process is not None:
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)


class ObjectRef:
    """The answer of ``handle.remote(...)``: ``ferroserve.get(ref)``, ``ref.result()``, or
    ``await ref``."""

    __slots__ = ("_future",)

    def __init__(self, future):
        self._future = future

    def result(self, timeout=None):
        try:
            return self._future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise GetTimeoutError(f"no answer within {timeout} s") from None

    def done(self):
        return self._future.done()

    def __await__(self):
        import asyncio

        return asyncio.wrap_future(self._future).__await__()


class ClientHandle:
    """A handle to an endpoint, from a script."""

    __slots__ = ("_client", "endpoint", "_options")

    def __init__(self, client, endpoint, options=None):
        self._client = client
        self.endpoint = endpoint
        self._options = options or {}

    def options(self, method_name=None, http_method=None, http_headers=None, query_params=None, shard_key=None, stream=None):
        """A handle with these options; HTTP options make calls HTTP-shaped, and
        ``stream=True`` makes ``remote`` return the answer's chunks as they come."""
        from ._api import Handle

        shaped = Handle(self.endpoint, self._options).options(
            method_name=method_name,
            http_method=http_method,
            http_headers=http_headers,
            query_params=query_params,
            shard_key=shard_key,
            stream=stream,
        )
        return ClientHandle(self._client, self.endpoint, shaped._options)

    def remote(self, *args):
        """Sends one argument (any Python object, pickled) to the endpoint now."""
        if len(args) > 1:
            raise TypeError("remote() takes one argument")
        arg = args[0] if args else None
        from ._starlette import forwarded

        forward = forwarded(arg)
        if forward is not None:
            meta, body = {"arg": "bytes", "forward": forward[0]}, forward[1]
        else:
            meta, body = _encode_arg(arg)
        meta.update(
            {
                "endpoint": self.endpoint,
                "method": self._options.get("method", "__call__"),
                "http": self._options.get("http"),
                "shard_key": self._options.get("shard_key"),
            }
        )
        if self._options.get("stream"):
            from ._client_stream import ClientStream

            return ClientStream(self._client, meta, body)
        return ObjectRef(self._client._pool().submit(_call, self._client, meta, body))

    def __repr__(self):
        return f"ClientHandle({self.endpoint!r})"


def _encode_arg(arg):
    import pickle

    if isinstance(arg, (bytes, bytearray)):
        return {"arg": "bytes"}, bytes(arg)
    return {"arg": "pickle"}, pickle.dumps(arg, protocol=pickle.HIGHEST_PROTOCOL)


def _call(client, meta, body):
    encoded = json.dumps(meta).encode("utf-8")
    # No client-side limit: a call takes what the backend takes (get(timeout=...) bounds the wait).
    raw = client._request("POST", "/api/call", struct.pack("<I", len(encoded)) + encoded + body, timeout=None)
    return _decode_call(raw)


def _decode_call(raw):
    """The value of a ``/api/call`` answer; its error raised."""
    from ._api import decode_reply

    (length,) = struct.unpack_from("<I", raw)
    reply = json.loads(raw[4 : 4 + length])
    payload = raw[4 + length :]
    if "error" in reply:
        raise RayServeException(reply["error"], status=reply.get("status"), traceback=reply.get("traceback"))
    status = reply.get("status", 200)
    if reply.get("kind") != "pickle" and status >= 400:
        raise RayServeException(payload.decode("utf-8", "replace").strip(), status=status)
    return decode_reply(reply, payload)


# --- get and wait, as ray.get and ray.wait --------------------------------------------------


def get(refs, timeout=None):
    """The value of a ref, or the values of a list of refs (in order); a backend's error is
    raised here as a ``RayServeException``; past ``timeout`` seconds, ``GetTimeoutError``."""
    if isinstance(refs, (list, tuple)):
        deadline = None if timeout is None else time.monotonic() + timeout
        values = []
        for ref in refs:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            values.append(_result(ref, left))
        return values
    return _result(refs, timeout)


def _result(ref, timeout):
    if hasattr(ref, "result"):
        return ref.result(timeout)
    raise TypeError(f"get() takes refs from handle.remote(), not {type(ref).__name__}")


def wait(refs, num_returns=1, timeout=None):
    """``(ready, not_ready)``: up to ``num_returns`` finished refs, in the order given, and
    the rest, waiting at most ``timeout`` seconds — as ``ray.wait``."""
    refs = list(refs)
    if len({id(ref) for ref in refs}) != len(refs):
        raise ValueError("wait() got the same ref twice")
    if num_returns > len(refs):
        raise ValueError(f"num_returns ({num_returns}) is more than the {len(refs)} refs")
    futures = [ref._future for ref in refs]
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        done = [ref for ref, future in zip(refs, futures) if future.done()]
        if len(done) >= num_returns:
            break
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            break
        pending = [future for future in futures if not future.done()]
        concurrent.futures.wait(pending, timeout=left, return_when=concurrent.futures.FIRST_COMPLETED)
    # As ray.wait: the first num_returns finished refs in the order given, then the rest.
    ready = done[:num_returns]
    chosen = {id(ref) for ref in ready}
    not_ready = [ref for ref in refs if id(ref) not in chosen]
    return ready, not_ready
