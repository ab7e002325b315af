"""Turning component functions into KFP components; used when the DAG is built, never in a task."""

from __future__ import annotations

import copy
import keyword
import linecache
import textwrap
from collections.abc import Callable, Sequence

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output
from kfp.dsl.python_component import PythonComponent

from retention.config import Profile


def build(func: Callable, profile: Profile, task: str, gpu: bool = False) -> PythonComponent:
    """``func`` as a component named ``task``.

    A KFP task takes its component's name, and the DAG's task names are the catalogue's: one
    function that trains several models (``train_binary``) becomes one component per model.
    """
    image = profile.pipeline.gpu_image if gpu else profile.pipeline.base_image
    comp = dsl.component(func, base_image=image, install_kfp_package=False, packages_to_install=[])
    spec = copy.deepcopy(comp.component_spec)
    spec.name = task
    return PythonComponent(component_spec=spec, python_func=func)


_ARTIFACTS = {"HTML": HTML, "Metrics": Metrics, "Model": Model}


def model_inputs_function(
    name: str,
    models: Sequence[str],
    outputs: dict[str, str],
    returns: str,
    doc: str,
    body: str,
    datasets: Sequence[str] = (),
) -> Callable:
    """A component function with one ``Input[Model]`` per name in ``models``.

    KFP reads a lightweight component's interface with ``inspect.signature`` and ships its source
    as ``inspect.getsource`` returns it, so a signature that follows the catalogue has to exist as
    source text: it is compiled under a file name of its own that is registered in ``linecache``,
    where ``inspect`` finds the source of code that has no file. ``outputs`` maps a parameter to
    an artifact type (``HTML``, ``Metrics``); ``datasets`` are ``Input[Dataset]`` parameters
    after the models (``body`` reads their ``.path``); ``body`` runs after ``paths``, the dict
    ``{model: <its input>.path}``, is set.
    """
    taken = {"config_json", *outputs, *datasets}
    for m in models:
        if not m.isidentifier() or keyword.iskeyword(m) or m in taken:
            raise ValueError(f"{name}: model name {m!r} cannot be a parameter of the component")
    unknown = set(outputs.values()) - set(_ARTIFACTS)
    if unknown:
        raise ValueError(f"{name}: unknown artifact type(s) {sorted(unknown)}")
    params = [
        "config_json: str",
        *(f"{m}: Input[Model]" for m in models),
        *(f"{d}: Input[Dataset]" for d in datasets),
        *(f"{k}: Output[{v}]" for k, v in outputs.items()),
    ]
    paths = "paths = {\n" + "".join(f'    "{m}": {m}.path,\n' for m in models) + "}\n"
    source = (
        f"def {name}(\n"
        + "".join(f"    {p},\n" for p in params)
        + f") -> {returns}:\n"
        + textwrap.indent(f'"""{doc}"""\n{paths}{body}', "    ")
    )
    filename = f"<components.{name}: generated from retention.catalogue>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace = {
        "__name__": f"components.{name}",
        "Input": Input,
        "Output": Output,
        "Dataset": Dataset,
        **_ARTIFACTS,
    }
    # dont_inherit: this module's ``from __future__ import annotations`` would turn the
    # annotations into strings, and KFP reads them as types.
    code = compile(source, filename, "exec", dont_inherit=True)
    exec(code, namespace)  # noqa: S102 - the source is built above from catalogue names
    return namespace[name]
