"""What a model server needs from the body and the return value: JSON errors are 400s,
plain `def` methods read the body without awaiting, model outputs become JSON, and an
HTTPException answers with its own status."""

import datetime
import decimal

from ferroserve import HTTPException


class Model:
    async def __call__(self, request):
        data = await request.json()
        return {"sum": sum(data["x"]), "day": datetime.date(2026, 11, 28), "price": decimal.Decimal("1.5")}

    def plain(self, request):
        return {"echo": request.json_sync()}

    def missing(self, request):
        raise HTTPException(404, "no model named `nope`")
