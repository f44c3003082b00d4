"""The CLIP+MLP predictor (document 001's ``clip/predictor``): prepare, train, predict.

    >>> prepared = prepare(depot, clip="openai/clip-vit-large-patch14", data="rated/")  # rated/scores.csv
    >>> record = train_predictor(depot, data=prepared, output_name="my-aesthetics", epochs=50)
    >>> predict(depot, record.key, Image.open("photo.png"))
    6.2

:func:`prepare` embeds a folder of scored images with a CLIP model of the depot; :func:`train_predictor`
fits a :class:`PredictorMLP` (LAION's "improved aesthetic predictor" layout) on them and installs it
as a ``clip_predictor`` model; :class:`ClipPredictor` scores images with it (or with a released LAION
file installed in the depot, given ``clip=``). Importing this package imports torch.
"""

from __future__ import annotations

from modeldepot.train.predictor.inference import ClipPredictor, predict
from modeldepot.train.predictor.mlp import PredictorMLP
from modeldepot.train.predictor.prepare import PreparedScores, prepare
from modeldepot.train.predictor.train import train_predictor

#: document 001's verbs: ``prepare``, ``train``, ``predict`` (the function shadows the ``train`` module's name
#: here, as ``prepare`` does; import the modules' other names from their modules)
train = train_predictor

__all__ = ["ClipPredictor", "PredictorMLP", "PreparedScores", "predict", "prepare", "train", "train_predictor"]
