"""imagelabel's launcher: flags (options), the graph (graph), running it (run), the CLI (cli)."""
