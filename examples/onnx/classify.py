"""A Python backend that calls the `iris` model with numpy arrays: the model serves with no
code, and this adds the class names around it.

    POST /classify  {"flowers": [[5.1, 3.5, 1.4, 0.2], ...]}  ->  ["setosa", ...]
"""

import numpy as np
from ferroserve import get_handle

NAMES = ["setosa", "versicolor", "virginica"]


async def classify(request):
    flowers = np.asarray((await request.json())["flowers"], dtype=np.float32)
    outputs = await get_handle("iris").infer({"x": flowers}, outputs=["label"])
    return [NAMES[i] for i in outputs["label"]]
