"""Answers the same for an HTTP request and for a handle call made with HTTP options; a
plain handle call hands the method its argument itself."""

import ferroserve


class Mirror:
    async def __call__(self, request):
        if not isinstance(request, ferroserve.Request):
            # A plain handle call: any Python object, as the caller passed it.
            return {"origin": "python", "type": type(request).__name__, "value": repr(request)}
        body = await request.body()
        return {
            "origin": request.origin,
            "method": request.method,
            "path": request.path,
            "user": request.headers.get("X-User"),
            "q": request.query_params.get("q"),
            "body": body.decode(),
        }

    async def json(self, request):
        return {"origin": request.origin, "json": await request.json()}

    async def form(self, request):
        form = await request.form()
        files = {k: [v.filename, len(await v.read())] for k, v in form.items() if isinstance(v, ferroserve.UploadFile)}
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        return {"fields": fields, "files": files}
