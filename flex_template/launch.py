"""The Dataflow Flex Template launcher's entry point (FLEX_TEMPLATE_PYTHON_PY_FILE in Dockerfile).

The launcher passes every template parameter as ``--name=value`` and Dataflow's own options
(``--runner``, ``--project``, ``--sdk_container_image``, ...): the same command line as a shell
run. It checks the job (exit 2 on a bad input, before any worker starts), submits it and returns
without waiting: a launcher that waited would hold the launch until the job ended.
"""

from __future__ import annotations

import sys

# What docs/dataflow.md's shell command sets by hand, for a worker image holding one model per
# GPU: the SDK from the image, one SDK process per VM, one harness thread (one batch at a time).
DATAFLOW_DEFAULTS = {
    "--sdk_location": "container",
    "--number_of_worker_harness_threads": "1",
}
EXPERIMENT = "no_use_multiple_sdk_containers"


def with_dataflow_defaults(argv: list[str]) -> list[str]:
    """``argv`` plus each default it does not set itself (either as ``--name value`` or ``--name=value``)."""
    given = {item.split("=", 1)[0] for item in argv if item.startswith("--")}
    added = [f"{flag}={value}" for flag, value in DATAFLOW_DEFAULTS.items() if flag not in given]
    # Either form of the experiment (no_use_... or use_...) given is the user's choice.
    if not any("use_multiple_sdk_containers" in item for item in argv):
        added.append(f"--experiments={EXPERIMENT}")
    return [*argv, *added]


if __name__ == "__main__":
    from pipeline.main import main

    sys.argv[1:] = with_dataflow_defaults(sys.argv[1:])
    main(wait=False)
