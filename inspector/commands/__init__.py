"""One module per CLI subcommand. Each stays thin: parse, call the library, print."""
