"""The Python quick start's model (docs/python.md): a scikit-learn classifier of iris flowers,
fitted when its replica starts, answering JSON features with a class and its probabilities."""

import numpy as np
from ferroserve import HTTPException
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression


class Iris:
    def __init__(self):
        # Each replica fits its own copy at start; a real app would load a saved model here.
        data = load_iris()
        self.model = LogisticRegression(max_iter=1000).fit(data.data, data.target)
        self.names = [str(name) for name in data.target_names]

    async def __call__(self, request):
        body = await request.json()
        try:
            features = np.asarray(body["features"], dtype=float).reshape(1, 4)
        except (KeyError, TypeError, ValueError):
            # A 400 with the reason, not a 500 with a traceback.
            raise HTTPException(400, 'send {"features": [four numbers]}')
        probabilities = self.model.predict_proba(features)[0]
        best = int(np.argmax(probabilities))
        return {
            "class": self.names[best],
            "probabilities": dict(zip(self.names, probabilities.round(3).tolist())),
        }
