"""winback's command line: thin Typer commands over the library packages (the output layer)."""
