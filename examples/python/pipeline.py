"""Composition: a pipeline endpoint calls two other endpoints through handles, from async
and from plain code."""

import ferroserve


def tokenize(text):
    if not isinstance(text, str):
        raise TypeError("tokenize wants a str")
    return text.split()


class Classifier:
    def __init__(self, positive_words):
        self.positive = set(positive_words)

    def __call__(self, tokens):
        score = sum(1 for t in tokens if t in self.positive)
        return {"label": "positive" if score else "negative", "score": score}


class Pipeline:
    def __init__(self):
        self.tokenizer = ferroserve.get_handle("tokenizer")
        self.classifier = ferroserve.get_handle("classifier")

    async def __call__(self, request):
        text = (await request.body()).decode() if isinstance(request, ferroserve.Request) else request
        tokens = await self.tokenizer.remote(text)
        return await self.classifier.remote(tokens)

    def sync_path(self, request):
        # Plain methods run on a thread: they use .result() instead of await.
        tokens = self.tokenizer.remote("a good day").result(timeout=10)
        return self.classifier.remote(tokens).result(timeout=10)
