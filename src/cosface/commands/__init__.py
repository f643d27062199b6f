"""One module per `cosface` subcommand; see cosface.cli."""
