"""The iris model as a Ferroserve Python backend (iris.yaml, iris_1.yaml)."""

from iris_model import predict, train


class Iris:
    def __init__(self):
        self.model = train()

    async def __call__(self, request):
        features = (await request.json())["features"]
        return {"class": predict(self.model, features)}
