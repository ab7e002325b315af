"""push: its inputs are exactly the models the catalogue releases.

Generated like evaluate-gates (see ``components.factory.model_inputs_function``).
"""

from components.factory import model_inputs_function
from retention import catalogue

RELEASED = tuple(s.name for s in catalogue.released())

push = model_inputs_function(
    "push",
    RELEASED,
    outputs={},
    returns="str",
    doc="Copy the gated models to the model store under a new version; flip ``production``.",
    body="""\
import json

from retention.config import Profile
from retention.store.push import push_models

pointer = push_models(Profile.model_validate_json(config_json), paths)
print(f"pushed release {pointer['release']}: {json.dumps(pointer['models'])}")
return json.dumps(pointer)
""",
)
