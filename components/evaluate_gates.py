"""evaluate-gates: its inputs are every model the catalogue gates or releases.

The function is generated (see ``components.factory.model_inputs_function``), so adding a model to the
catalogue adds its input here and in the DAG without an edit.
"""

from components.factory import model_inputs_function
from retention import catalogue

JUDGED = tuple(s.name for s in catalogue.judged())

# A single return value on purpose: kfp.local (2.17) cannot resolve a ``dsl.If`` condition on
# one field of a NamedTuple output, only on a component's sole ``Output``.
evaluate_gates = model_inputs_function(
    "evaluate_gates",
    JUDGED,
    outputs={"report": "HTML", "summary": "Metrics"},
    returns="bool",
    doc="Judge every model against the profile's gates; an HTML report, returns ``passed``.",
    body="""\
from components.kfp_results import log_gates
from retention.config import Profile
from retention.evaluation.evaluate import evaluate_run

verdict = evaluate_run(Profile.model_validate_json(config_json), paths, report.path)
return log_gates(verdict, summary)
""",
)
