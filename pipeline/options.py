"""StyleTransferOptions (Beam options) -> PipelineConfig (config.py), the one configuration of a job.

Imports: Beam's PipelineOptions, flags and config; never torch.
"""

from __future__ import annotations

import argparse

from apache_beam.options.pipeline_options import PipelineOptions, TestOptions, _BeamArgumentParser

from pipeline.config import PipelineConfig
from pipeline.flags import RaisingParser, add_arguments, did_you_mean


class StyleTransferOptions(PipelineOptions):
    """The job's own flags (flags.py); every other Beam option (--runner, --project, ...) passes through."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        add_arguments(parser)


class _RaisingParser(RaisingParser, _BeamArgumentParser):
    """Beam's parser, raising instead of printing its 150-line usage and exiting."""


def check_arguments(argv: list[str]) -> None:
    """Refuse what neither this job nor any Beam option class knows.

    Beam's own parser drops unknown flags with a log line, so a typo such as ``--iteration 3``
    would run the default iterations. This builds the parser the way Beam does (every
    PipelineOptions subclass, no abbreviations) and raises instead.

    Raises:
        ValueError: naming the first unknown flag and the nearest known one, or a flag's bad value.
    """
    parser = _RaisingParser(allow_abbrev=False)
    for cls in {str(c): c for c in PipelineOptions.__subclasses__()}.values():
        cls._add_argparse_args(parser)  # the parser Beam builds in get_all_options
    _, unknown = parser.parse_known_args(argv)
    if not unknown:
        return
    known = [option for action in parser._actions for option in action.option_strings]
    flag = next((item for item in unknown if item.startswith("-")), None)
    if flag is None:
        raise ValueError(f"unexpected argument {unknown[0]!r} (flags take the form --name value or --name=value)")
    name = flag.split("=", 1)[0]
    raise ValueError(did_you_mean(name, known) or f"unknown flag {name}; see --help")


def config_from_options(options: PipelineOptions) -> PipelineConfig:
    """The job's config from Beam's parsed options. Raises ValueError naming the bad flag or value."""
    return PipelineConfig.from_flags(options.view_as(StyleTransferOptions), options.view_as(TestOptions).dry_run)
