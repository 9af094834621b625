"""The Dataflow Flex Template's metadata.json, generated from the job's own flags (flags.py).

One home for every parameter's name and help: the template lists exactly the job's flags, with
the help text of ``--help`` and a validation regex that Dataflow applies before it starts a
launcher. The regexes are deliberately narrower than the parser where Dataflow needs it
(inputs and output must be object-store URLs: workers cannot read the launcher's disk).

    python -m pipeline.template_metadata > flex_template/metadata.json

tests/test_flex_template.py fails when the committed file and this generator disagree.
Free of Beam and torch, like flags.py.

Imports: flags and the engine's torch-free config and families; no Beam, no torch.
"""

from __future__ import annotations

import argparse
import json
import re
from typing import Any, Final

from pipeline import flags
from transforms.nst.config import INIT_MODES
from transforms.nst.families import NAMED_WEIGHTS

NAME: Final = "Batch neural style transfer"
DESCRIPTION: Final = (
    "Stylizes content/style image pairs from a manifest (Gatys et al.), writing images, loss logs, "
    "summary.json and report.html to the output folder. See README.md, 'Dataflow Flex Template'."
)

# An object-store URL or glob: gs://, s3://, ... (a worker cannot read the launcher's disk).
_URL: Final = r"[a-z][a-z0-9+.-]*://\S+"
_UNSIGNED: Final = r"[0-9]+"
_NUMBER: Final = r"([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?"
_NAME: Final = r"[A-Za-z0-9_]+"

# Flags whose values are not described by their argparse type alone.
_BY_FLAG: Final = {
    "manifest": _URL,
    "contents": _URL,
    "styles": _URL,
    "output": _URL,
    "weights": "|".join([*map(re.escape, NAMED_WEIGHTS), _URL]),
    "init": "|".join([*map(re.escape, INIT_MODES), _URL]),
    "batch_size": r"auto|[1-9][0-9]*",
}
_BY_TYPE: Final = {
    int: _UNSIGNED,
    float: _NUMBER,
    flags.switch: "true|false",
    flags.comma_names: rf"{_NAME}(,{_NAME})*",
    flags.comma_floats: rf"{_NUMBER}(,{_NUMBER})*",
    flags.scale_list: r"auto|none|[0-9]+:[0-9]+(,[0-9]+:[0-9]+)*",
}
# The one flag every run needs (the inputs are --manifest, or --contents with --styles).
REQUIRED: Final = ("output",)


def _regex(action: argparse.Action) -> str:
    if action.dest in _BY_FLAG:
        body = _BY_FLAG[action.dest]
    elif action.choices:
        body = "|".join(map(re.escape, action.choices))
    elif action.type in _BY_TYPE:
        body = _BY_TYPE[action.type]
    else:
        raise ValueError(f"--{action.dest}: no template regex for its values; add one to _BY_FLAG")
    return f"^({body})$"


def _help(action: argparse.Action) -> str:
    text = action.help or ""
    if action.default not in (None, ()) and action.default is not False and "default" not in text:
        default = action.default
        text += f" (default: {','.join(map(str, default)) if isinstance(default, tuple) else default})"
    return text


def job_actions() -> list[argparse.Action]:
    """The job's own flags (not Beam's), in --help order."""
    parser = argparse.ArgumentParser(add_help=False)
    flags.add_arguments(parser)
    return list(parser._actions)


def metadata() -> dict[str, Any]:
    return {
        "name": NAME,
        "description": DESCRIPTION,
        "parameters": [
            {
                "name": action.dest,
                "label": action.dest.replace("_", " ").capitalize(),
                "helpText": _help(action),
                "isOptional": action.dest not in REQUIRED,
                "regexes": [_regex(action)],
            }
            for action in job_actions()
        ],
    }


def render() -> str:
    return json.dumps(metadata(), indent=2) + "\n"


if __name__ == "__main__":
    print(render(), end="")
