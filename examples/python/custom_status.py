"""The FAQ's custom status code, as written: a Starlette Response when Starlette is
installed; ferroserve.Response works the same without it."""

import ferroserve


def f(starlette_request):
    from starlette.responses import Response

    return Response('Hello, world!', status_code=123, media_type='text/plain')


def g(request):
    return ferroserve.Response("Created!", status_code=201, media_type="text/plain", headers={"x-model": "v7"})
