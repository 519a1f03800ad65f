"""The `streamserve-loadgen` command (cli.py) and its groups of subcommands."""
