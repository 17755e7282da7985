"""The model every iris row serves: scikit-learn's LogisticRegression fitted on the iris
data set that ships with scikit-learn (no download), the same in every system."""

from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

# The request every row posts, and the class each system must answer before it is timed.
FEATURES = [5.9, 3.0, 5.1, 1.8]
CLASS = 2


def train():
    """The fitted model: a few milliseconds, at each replica's or worker's start."""
    data = load_iris()
    return LogisticRegression(max_iter=1000).fit(data.data, data.target)


def predict(model, features):
    """The class of one row of four features, as a plain int."""
    return int(model.predict([features])[0])


class Iris:
    """The model as a class with an `async def __call__` taking a Starlette-style request:
    Ferroserve's backend as it is, Ray Serve's deployment once decorated."""

    def __init__(self):
        self.model = train()

    async def __call__(self, request):
        features = (await request.json())["features"]
        return {"class": predict(self.model, features)}


if __name__ == "__main__":
    assert predict(train(), FEATURES) == CLASS
    print("ok")
