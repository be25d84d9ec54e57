"""One module per `hetserve` subcommand; each exposes register(subparsers)."""
