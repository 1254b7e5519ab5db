"""A user's own model in the SageMaker PyTorch serving convention, without torch (the CPU
serving image has none): it scales the numbers it is sent by the factor in model/scale.json."""

import json
import os


def model_fn(model_dir):
    with open(os.path.join(model_dir, "scale.json")) as f:
        return json.load(f)["factor"]


def input_fn(body, content_type):
    if content_type != "application/json":
        raise ValueError(f"this model reads application/json, not {content_type}")
    return json.loads(body)["values"]


def predict_fn(values, factor):
    return [v * factor for v in values]


def output_fn(prediction, accept):
    return json.dumps({"scaled": prediction}), "application/json"
