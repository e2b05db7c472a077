"""One module per CLI command that does real work: ``add_parser(subparsers)`` and ``run(args)``.

These are the only places besides :mod:`bocb.cli` that read the environment (data and cache
locations) and print for humans.
"""
