"""The iris model as a Ferroserve Python backend (iris.yaml, iris_1.yaml): the class of
iris_model.py as it is."""

from iris_model import Iris  # noqa: F401
