"""Starlette middlewares given to ``serve.start(http_options={"middlewares": [...]})``, as the
native middlewares of the app file's ``http.middlewares``."""

SUPPORTED = "CORSMiddleware, GZipMiddleware, TrustedHostMiddleware and HTTPSRedirectMiddleware"

CORS_OPTIONS = ("allow_origins", "allow_methods", "allow_headers", "allow_credentials", "max_age", "expose_headers")


def _parts(middleware):
    """(class name, options) of ``Middleware(cls, **options)``, or of a bare class."""
    cls = getattr(middleware, "cls", middleware)
    options = dict(getattr(middleware, "kwargs", None) or getattr(middleware, "options", None) or {})
    args = getattr(middleware, "args", None)
    if args:
        raise ValueError(f"{getattr(cls, '__name__', cls)}: give its options by name")
    return getattr(cls, "__name__", str(cls)), options


def middleware_options(middleware):
    """The app file's entry for one Starlette middleware; a clear error for any other."""
    name, options = _parts(middleware)
    if name == "CORSMiddleware":
        unknown = sorted(set(options) - set(CORS_OPTIONS) - {"allow_origin_regex"})
        if "allow_origin_regex" in options or unknown:
            bad = ", ".join(unknown + (["allow_origin_regex"] if "allow_origin_regex" in options else []))
            raise ValueError(f"CORSMiddleware: {bad} is not supported; the options are {', '.join(CORS_OPTIONS)}")
        return {"cors": {k: (list(v) if isinstance(v, (list, tuple, set)) else v) for k, v in options.items()}}
    if name == "GZipMiddleware":
        return {"compression": {}}
    if name == "TrustedHostMiddleware":
        hosts = options.get("allowed_hosts", ["*"])
        if not hosts:
            raise ValueError("TrustedHostMiddleware: allowed_hosts is empty, which refuses every request")
        unknown = sorted(set(options) - {"allowed_hosts"})
        if unknown:
            raise ValueError(f"TrustedHostMiddleware: {', '.join(unknown)} is not supported")
        return {"trusted_host": {"allowed_hosts": list(hosts)}}
    if name == "HTTPSRedirectMiddleware":
        return {"https_redirect": {}}
    raise ValueError(
        f"the middleware {name} is not supported: Ferroserve runs {SUPPORTED} natively "
        "(the rest of an app's HTTP layer is configured in YAML: see docs/middlewares.md — "
        "request_id, timeout, body_limit — or as a tower layer from Rust)"
    )
