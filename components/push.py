"""push: its inputs are exactly the models the catalogue releases, and the run's splits (the
release's training reference and data fingerprint come from them).

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
    doc="Copy the gated models to the model store, register the release, flip ``production``.",
    datasets=("splits",),
    body="""\
import json

from retention.config import Profile
from retention.registry.release import push_models

pointer = push_models(Profile.model_validate_json(config_json), paths, splits=splits.path)
print(f"pushed release {pointer['registered']}: {json.dumps(pointer['aliases'])}")
return json.dumps(pointer)
""",
)
