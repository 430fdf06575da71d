"""Errors the CLI turns into one clear message and an exit code."""


class UserError(Exception):
    """Bad input: a recipe, profile, option or run id the user can fix. Exit code 2, registry unchanged."""

    exit_code = 2


class SchedulerError(Exception):
    """The scheduler refused or failed a request (e.g. sbatch/qsub printed an error)."""
